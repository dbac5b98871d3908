"""Know before you launch: predicted peak memory per GPU and step time of a trial, from the
model's config.json alone (no weights, no torch).

    shapes    the architecture numbers of config.json and parameter counts per module
    memory    peak memory as a sum of named parts (weights, grads, optimizer, activations...)
    kinds     per method kind: which models a step holds at once (DPO reference, PPO value...)
    hardware  GPU types (memory, bf16 rate) and the step-time estimate from FLOPs
    predict   a composed trial config -> Prediction (what the driver, plan and records use)
"""
