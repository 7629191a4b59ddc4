"""Worked examples of plugins: a model, a data set, a protocol, an optimizer and a delay model of one's
own, each a module here named in a config by import path (``model.name = "examples.nets:SmallConvNet"``).
Run them from the repository's top, where ``examples`` is importable: ``asyncps run examples/model.toml``.
The README's "Your own model, data and algorithm" says what each kind must provide."""
