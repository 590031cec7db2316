"""The translation task's evaluation of one system (``rule evaluate``): members and the ensemble
read from the teacher artifact, a student decoded and scored here.

* quality (``test``, ``shift``): corpus BLEU and chrF (``sacrebleu``, detokenised hypotheses
  against the reference text; its signature in :data:`SIGNATURES`), the reference NLL per token
  and token accuracy under teacher forcing, top-1 agreement with the ensemble there;
* sequence-level uncertainty: every token measure averaged over the hypothesis, and
  ``seq_nll = -(1/L) ln P(hyp | x)``;
* error detection (``test``): the prediction rejection ratio of every measure with the
  sentence's ``1 - chrF / 100`` as its loss (:func:`pipeline.maths.metrics.rejection_ratio`);
* OOD detection: ROC-AUC / PR-AUC (OOD positive) of every measure, test against ``shift`` and
  every ``ood_*`` split;
* confidence on the test references (members and ensemble): mean top probability, share of
  tokens whose top class holds more than 0.5 and 0.9, and (ensemble) the mean ``ln pi_bar`` of
  the classes below the top one.

Metric rows: ``split, metric, measure, value``.
"""

from __future__ import annotations

import numpy as np
import sacrebleu
import torch

from pipeline.maths import metrics as Mx
from pipeline.maths.tokens import CONFIDENT
from pipeline.maths.uncertainty import SCORES
from pipeline.tasks.translation import data as TD
from pipeline.tasks.translation import vocab as Vb
from pipeline.tasks.translation.systems import decode, hypothesis_outputs, reference_outputs
from pipeline.tasks.translation.teacher import check_manifest, load_split, split_pairs

SEQ_SCORES = (*SCORES, "seq_nll")


def signatures() -> dict[str, str]:
    """sacrebleu's signatures of the corpus BLEU and chrF computed here (one reference)."""
    out = {}
    for name, metric in (("bleu", _bleu()), ("chrf", _chrf())):
        metric.corpus_score(["a"], [["a"]])  # a signature names the number of references
        out[name] = str(metric.get_signature())
    return out


def _bleu():
    return sacrebleu.metrics.BLEU()


def _chrf():
    return sacrebleu.metrics.CHRF()


def sentence_scores(tok: dict[str, torch.Tensor], offsets: torch.Tensor) -> dict[str, np.ndarray]:
    """Each hypothesis-token measure averaged over its sentence (``offsets [N + 1]``), and
    ``seq_nll = -mean ln p(y_t)``."""
    lengths = (offsets[1:] - offsets[:-1]).long()
    seq = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    n, counts = len(lengths), lengths.double()
    out = {
        name: (torch.bincount(seq, tok[name].double(), minlength=n) / counts).numpy()
        for name in SCORES
    }
    out["seq_nll"] = (torch.bincount(seq, -tok["logp_y"].double(), minlength=n) / counts).numpy()
    return out


def _hyps(tok: dict, offsets: torch.Tensor) -> list[list[int]]:
    ids = tok["tokens"].tolist()
    return [ids[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]


def evaluate_system(group, seed, data_dir, teacher_dir, model, meta, cfg, vocab, device):
    """Tidy metric rows and per-sentence arrays of one system at V = ``vocab``."""
    device = device or torch.device("cpu")
    info = check_manifest(teacher_dir, vocab)
    key = f"member-{seed}" if group == "member" else "ensemble"
    if model is None and key not in info["systems"]:
        raise ValueError(f"teacher artifact {teacher_dir} has no outputs of {key}")
    if model is not None and int(meta["vocab_size"]) != vocab:
        raise ValueError(f"the student has V={meta['vocab_size']}, expected {vocab}")
    sp = TD.tokenizer(data_dir, "target", vocab)
    rows, arrays = [], {}

    def add(split, metric, value, measure=""):
        rows.append({"split": split, "metric": metric, "measure": measure, "value": float(value)})

    for split in info["splits"]:
        cache = load_split(teacher_dir, split, info)
        d = TD.load_split(data_dir, split, vocab)
        src, pairs = split_pairs(d, info["sentences"][split])
        if model is None:
            out = {k.split(".", 1)[1]: v for k, v in cache.items() if k.startswith(f"{key}.")}
        else:
            student = (meta["method"], meta["options"])
            # decoded as the teacher artifact decoded the members (its recorded settings)
            hyps = decode([model.to(device)], src, info["config"], device, f", {split}")
            out = hypothesis_outputs([model], src, hyps, device, student)
            if pairs is not None:
                out.update(reference_outputs([model], pairs, device, student))
        hyp = {k[4:]: v for k, v in out.items() if k.startswith("hyp.")}
        scores = sentence_scores(hyp, hyp["offsets"])
        arrays.update({f"{split}.{k}": torch.from_numpy(v).float() for k, v in scores.items()})
        arrays[f"{split}.hyp_tokens"] = hyp["tokens"].to(torch.int32)
        arrays[f"{split}.hyp_offsets"] = hyp["offsets"]
        if "ref.pred" not in out:
            continue
        texts = [Vb.decode(sp, h) for h in _hyps(hyp, hyp["offsets"])]
        refs = d["tgt_text"][: len(texts)]
        if len(refs) != len(texts):
            raise ValueError(f"{split}: {len(texts)} hypotheses for {len(refs)} references")
        add(split, "bleu", _bleu().corpus_score(texts, [refs]).score)
        add(split, "chrf", _chrf().corpus_score(texts, [refs]).score)
        if split == "test":
            print(f"sacrebleu signatures: {signatures()}", flush=True)
        chrf = np.array(
            [_chrf().sentence_score(h, [r]).score for h, r in zip(texts, refs, strict=True)]
        )
        arrays[f"{split}.chrf"] = torch.from_numpy(chrf).float()
        y = pairs.targets(range(len(pairs)))
        pred = out["ref.pred"].long()
        if len(pred) != len(y):
            raise ValueError(f"{split}: {len(pred)} reference outputs for {len(y)} tokens")
        nll = float(-out["ref.logp_y"].double().mean())
        add(split, "nll", nll)
        add(split, "accuracy", float((pred == y).double().mean()))
        add(split, "agreement", float((pred == cache["ensemble.ref.pred"].long()).double().mean()))
        if split == "test":
            for name in SEQ_SCORES:
                add(split, "prr", Mx.rejection_ratio(scores[name], 1.0 - chrf / 100.0), name)
            if model is None:
                top = out["ref.top_prob"].double()
                add(split, "top_prob", float(top.mean()))
                for level in CONFIDENT:
                    add(split, "confident_share", float((top > level).double().mean()), f">{level}")
                if key == "ensemble":
                    add(split, "tail_log_mean", float(out["ref.tail_log_mean"].double().mean()))
    for split in info["splits"]:
        if split != "test":
            for name in SEQ_SCORES:
                s_in, s_out = arrays[f"test.{name}"].numpy(), arrays[f"{split}.{name}"].numpy()
                add(split, "ood_auroc", Mx.ood_auroc(s_in, s_out), measure=name)
                add(split, "ood_aupr", Mx.ood_aupr(s_in, s_out), measure=name)
    return rows, arrays, {"vocab": vocab}
