"""Training: model loading (modeling), trainer arguments and callbacks, and one module per
trainer (sft, dpo, reward, ppo, grpo), each returning a TrainResult (results)."""
