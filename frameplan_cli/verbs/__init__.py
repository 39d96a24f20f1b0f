"""The verbs of ``frameplan``: one module per verb with ``add_arguments(parser)`` and ``run(args) -> int`` (the
training verbs live in frameplan_training.scripts). Heavy imports happen inside ``run``, so ``frameplan --help``
stays fast."""
