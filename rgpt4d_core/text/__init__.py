"""Text side of the student: tokenizers (``tokenizer``), chat/R4D prompts (``prompts``), answer extraction (``answers``)."""
