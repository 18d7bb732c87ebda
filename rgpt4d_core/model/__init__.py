"""The student MLLM: SigLIP vision tower, NVILA projector, TPE, token fusion, Qwen2 LLM, D_4DP, presets and
NVILA-layout checkpoints. Public entry points: :class:`~rgpt4d_core.model.student.Student`,
:func:`~rgpt4d_core.model.presets.student_config`, ``checkpoint.save_student`` / ``checkpoint.load_student``.
"""
