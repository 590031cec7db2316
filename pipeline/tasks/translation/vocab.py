"""Sub-word vocabularies with SentencePiece (the field's tokenizer): one model for the source, one
per target vocabulary size V (the class-count axis), each trained on the train split only.

Every model is BPE with character coverage 1, single-threaded and unshuffled, so a model is a
deterministic function of its sentences and size (the run's artifacts hold the model files). Ids:
``0`` padding, ``1`` unknown, ``2`` beginning of sentence (the decoder's first input), ``3`` end
of sentence; a target vocabulary of size V gives a V-way classification per target token.
"""

from __future__ import annotations

import io
import re

import sentencepiece as spm

from pipeline.errors import ConfigError

__all__ = ["BOS", "EOS", "PAD", "UNK", "decode", "encode", "processor", "train"]

PAD, UNK, BOS, EOS = 0, 1, 2, 3
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def train(sentences: list[str], vocab_size: int, key: str = "vocab_sizes") -> bytes:
    """The serialised SentencePiece model of ``vocab_size`` pieces trained on ``sentences``; a
    size the sentences cannot support is a :class:`ConfigError` naming ``key`` and the largest
    size they can."""
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buffer,
            vocab_size=int(vocab_size),
            model_type="bpe",
            character_coverage=1.0,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            num_threads=1,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            max_sentence_length=1 << 16,
            minloglevel=2,
        )
    except RuntimeError as err:
        found = _TOO_HIGH.search(str(err))
        if found is None:
            raise
        raise ConfigError(
            key,
            int(vocab_size),
            f"at most {found.group(2)}: the largest vocabulary SentencePiece builds from the "
            "train split",
        ) from err
    return buffer.getvalue()


def processor(model: bytes) -> spm.SentencePieceProcessor:
    """A processor of the serialised ``model``."""
    return spm.SentencePieceProcessor(model_proto=model)


def encode(sp: spm.SentencePieceProcessor, sentences: list[str]) -> list[list[int]]:
    """Piece ids of each sentence, ``EOS`` appended."""
    return [ids + [EOS] for ids in sp.encode(sentences)]


def decode(sp: spm.SentencePieceProcessor, ids) -> str:
    """The text of piece ids, cut at the first ``EOS``; padding and ``BOS`` are dropped."""
    out = []
    for i in (int(x) for x in ids):
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(i)
    return sp.decode(out)
