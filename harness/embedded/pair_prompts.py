"""FastChat's four pairwise judge prompts (MT-Bench pairwise mode, harness.eval.pairwise).

The texts are FastChat's (lm-sys/FastChat, fastchat/llm_judge/data/judge_prompts.jsonl,
Apache License 2.0, Copyright the FastChat authors), reproduced verbatim. They live here, not
in the embedded build's judge_prompts.jsonl, so adding them changes no cached build.
"""

from __future__ import annotations

PAIR_PROMPTS = [
    {
        'name': (
            'pair-v2'
        ),
        'type': (
            'pairwise'
        ),
        'system_prompt': (
            'Please act as an impartial judge and evaluate the quality of the respo'
            'nses provided by two AI assistants to the user question displayed belo'
            "w. You should choose the assistant that follows the user's instruction"
            "s and answers the user's question better. Your evaluation should consi"
            'der factors such as the helpfulness, relevance, accuracy, depth, creat'
            'ivity, and level of detail of their responses. Begin your evaluation b'
            'y comparing the two responses and provide a short explanation. Avoid a'
            'ny position biases and ensure that the order in which the responses we'
            're presented does not influence your decision. Do not allow the length'
            ' of the responses to influence your evaluation. Do not favor certain n'
            'ames of the assistants. Be as objective as possible. After providing y'
            'our explanation, output your final verdict by strictly following this '
            'format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is be'
            'tter, and "[[C]]" for a tie.'
        ),
        'prompt_template': (
            "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answe"
            "r_a}\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's An"
            "swer]\n{answer_b}\n[The End of Assistant B's Answer]"
        ),
        'description': (
            'Prompt for general questions'
        ),
        'category': (
            'general'
        ),
        'output_format': (
            '[[A]]'
        ),
    },
    {
        'name': (
            'pair-v2-multi-turn'
        ),
        'type': (
            'pairwise'
        ),
        'system_prompt': (
            'Please act as an impartial judge and evaluate the quality of the respo'
            'nses provided by two AI assistants to the user questions. You should c'
            "hoose the assistant that follows the user's instructions and answers t"
            "he user's questions better. Your evaluation should consider factors su"
            'ch as the helpfulness, relevance, accuracy, depth, creativity, and lev'
            'el of detail of their responses. You should focus on who provides a be'
            'tter answer to the second user question. Begin your evaluation by comp'
            'aring the responses of the two assistants and provide a short explanat'
            'ion. Avoid any position biases and ensure that the order in which the '
            'responses were presented does not influence your decision. Do not allo'
            'w the length of the responses to influence your evaluation. Do not fav'
            'or certain names of the assistants. Be as objective as possible. After'
            ' providing your explanation, output your final verdict by strictly fol'
            'lowing this format: "[[A]]" if assistant A is better, "[[B]]" if assis'
            'tant B is better, and "[[C]]" for a tie.'
        ),
        'prompt_template': (
            "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{ques"
            'tion_1}\n\n### Assistant A:\n{answer_a_1}\n\n### User:\n{question_2}\n\n### As'
            "sistant A:\n{answer_a_2}\n\n<|The End of Assistant A's Conversation with "
            "User|>\n\n\n<|The Start of Assistant B's Conversation with User|>\n\n### Us"
            'er:\n{question_1}\n\n### Assistant B:\n{answer_b_1}\n\n### User:\n{question_2'
            "}\n\n### Assistant B:\n{answer_b_2}\n\n<|The End of Assistant B's Conversat"
            'ion with User|>'
        ),
        'description': (
            'Prompt for multi-turn general questions'
        ),
        'category': (
            'general'
        ),
        'output_format': (
            '[[A]]'
        ),
    },
    {
        'name': (
            'pair-math-v1'
        ),
        'type': (
            'pairwise'
        ),
        'system_prompt': (
            'Please act as an impartial judge and evaluate the quality of the respo'
            'nses provided by two AI assistants to the user question displayed belo'
            'w. Your evaluation should consider correctness and helpfulness. You wi'
            "ll be given a reference answer, assistant A's answer, and assistant B'"
            "s answer. Your job is to evaluate which assistant's answer is better. "
            "Begin your evaluation by comparing both assistants' answers with the r"
            'eference answer. Identify and correct any mistakes. Avoid any position'
            ' biases and ensure that the order in which the responses were presente'
            'd does not influence your decision. Do not allow the length of the res'
            'ponses to influence your evaluation. Do not favor certain names of the'
            ' assistants. Be as objective as possible. After providing your explana'
            'tion, output your final verdict by strictly following this format: "[['
            'A]]" if assistant A is better, "[[B]]" if assistant B is better, and "'
            '[[C]]" for a tie.'
        ),
        'prompt_template': (
            '[User Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answe'
            "r_1}\n[The End of Reference Answer]\n\n[The Start of Assistant A's Answer"
            "]\n{answer_a}\n[The End of Assistant A's Answer]\n\n[The Start of Assistan"
            "t B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
        ),
        'description': (
            'Prompt for math questions'
        ),
        'category': (
            'math'
        ),
        'output_format': (
            '[[A]]'
        ),
    },
    {
        'name': (
            'pair-math-v1-multi-turn'
        ),
        'type': (
            'pairwise'
        ),
        'system_prompt': (
            'Please act as an impartial judge and evaluate the quality of the respo'
            'nses provided by two AI assistants to the user questions. Your evaluat'
            'ion should consider correctness and helpfulness. You will be given ref'
            "erence answers, the assistant A's answers, the assistant B's answers. "
            'Your job is to determine which assistant provides correct and helpful '
            'answers to the second user question. Begin your evaluation by comparin'
            "g both assistants' answers with the reference answers. Identify and co"
            'rrect any mistakes. Avoid any position biases and ensure that the orde'
            'r in which the responses were presented does not influence your decisi'
            'on. Do not allow the length of the responses to influence your evaluat'
            'ion. Do not favor certain names of the assistants. Be as objective as '
            'possible. After providing your explanation, output your final verdict '
            'by strictly following this format: "[[A]]" if assistant A is better, "'
            '[[B]]" if assistant B is better, and "[[C]]" for a tie.'
        ),
        'prompt_template': (
            '<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Referen'
            'ce answer:\n{ref_answer_1}\n\n### User:\n{question_2}\n\n### Reference answe'
            'r:\n{ref_answer_2}\n\n<|The End of Reference Answer|>\n\n\n<|The Start of As'
            "sistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assi"
            'stant A:\n{answer_a_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answe'
            "r_a_2}\n\n<|The End of Assistant A's Conversation with User|>\n\n\n<|The St"
            "art of Assistant B's Conversation with User|>\n\n### User:\n{question_1}\n"
            '\n### Assistant B:\n{answer_b_1}\n\n### User:\n{question_2}\n\n### Assistant '
            "B:\n{answer_b_2}\n\n<|The End of Assistant B's Conversation with User|>"
        ),
        'description': (
            'Prompt for multi-turn general questions'
        ),
        'category': (
            'general'
        ),
        'output_format': (
            '[[A]]'
        ),
    },
]
