"""Evaluation: generation backends behind one ``Generator`` interface (``generation``), the samples.jsonl schema
(``samples``), metrics (``metrics``), ``mathrecipe eval`` (``run``), the in-run evaluation of ``mathrecipe run``
(``inrun``), ``mathrecipe compare`` (``compare``), presets and the CLI parsers (``cli``)."""
