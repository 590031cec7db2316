"""The translation task (Spanish -> English Bible, issue 30), being built: its parallel corpus,
sub-word vocabularies, Transformer and decoding are here and tested; it has no ``spec.py`` yet,
so :data:`pipeline.tasks.TASKS` does not list it and no config can select it.

* :mod:`.corpus`   verse alignment, cleaning, splits (shift books, OOD sets)
* :mod:`.vocab`    SentencePiece vocabularies (the target size is the class-count axis)
* :mod:`.data`     the prepared data: tokenizers, encoded splits, manifest
* :mod:`.model`    the Transformer encoder-decoder with an incremental decoder state
* :mod:`.decode`   beam search and greedy search, for one model or an ensemble
"""
