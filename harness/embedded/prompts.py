"""FastChat's four single-answer grading prompts (the embedded MT-Bench judge prompts).

The texts are FastChat's (lm-sys/FastChat, fastchat/llm_judge/data/judge_prompts.jsonl,
Apache License 2.0, Copyright the FastChat authors), reproduced verbatim.
"""

from __future__ import annotations

_JUDGE_INTRO = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. ")
_RATE = ("After providing your explanation, you must rate the response on a scale of 1 to 10 "
         "by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".")
_GENERAL = ("Your evaluation should consider factors such as the helpfulness, relevance, "
            "accuracy, depth, creativity, and level of detail of the response. ")
_MATH = ("Your evaluation should consider correctness and helpfulness. You will be given a "
         "reference answer and the assistant's answer. ")
_CONV = ("<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
         "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n"
         "{answer_2}\n\n<|The End of Assistant A's Conversation with User|>")
_REF_CONV = ("<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n"
             "### Reference answer:\n{ref_answer_1}\n\n### User:\n{question_2}\n\n"
             "### Reference answer:\n{ref_answer_2}\n\n<|The End of Reference Answer|>\n\n\n")

JUDGE_PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\n" + _JUDGE_INTRO + _GENERAL + "Begin your evaluation "
     "by providing a short explanation. Be as objective as possible. " + _RATE +
     "\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
     "[The End of Assistant's Answer]",
     "description": "Prompt for general questions", "category": "general",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\n" + _JUDGE_INTRO + _MATH + "Begin your evaluation by "
     "comparing the assistant's answer with the reference answer. Identify and correct any "
     "mistakes. Be as objective as possible. " + _RATE + "\n\n[Question]\n{question}\n\n"
     "[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n"
     "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]",
     "description": "Prompt for general questions", "category": "math",
     "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single",
     "system_prompt": _JUDGE_INTRO + _GENERAL + "You evaluation should focus on the "
     "assistant's answer to the second user question. Begin your evaluation by providing a "
     "short explanation. Be as objective as possible. " + _RATE + "\n\n",
     "prompt_template": _CONV, "description": "Prompt for general questions",
     "category": "general", "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single",
     "system_prompt": _JUDGE_INTRO.replace(" displayed below", "") + _MATH + "You evaluation "
     "should focus on the assistant's answer to the second question. Begin your evaluation by "
     "comparing the assistant's answer with the reference answer. Identify and correct any "
     "mistakes. Be as objective as possible. " + _RATE + "\n\n",
     "prompt_template": _REF_CONV + _CONV, "description": "Prompt for general questions",
     "category": "math", "output_format": "[[rating]]"},
]
