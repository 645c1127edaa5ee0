"""Regenerate the tiny random-weight checkpoints in tests/data/checkpoints and their upstream vectors.

Run ONCE, outside the test run and outside driftgate's venv (torch is not a driftgate dependency):

    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers sentencepiece protobuf
    /tmp/st/bin/python tests/data/make_checkpoints.py

Each checkpoint is saved by the upstream libraries themselves (sentence-transformers' own
`save`, transformers' `save_pretrained`), except `st-old-layout`, which is the `st6-bert`
folder rearranged into the older layout (transformer in `0_Transformer/`, prompts at the
root) that sentence-transformers still loads. The vectors in `<name>.jsonl` are what
upstream sentence-transformers computes from each saved folder (fp32, CPU), so they also
prove that upstream reads each layout the way driftgate does. Versions used are written to
`checkpoints/VERSIONS.json`.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import sentence_transformers
import sentencepiece
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer, models
from tokenizers import BertWordPieceTokenizer
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizer,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "checkpoints"
PROMPTS = {"query": "query: ", "document": "passage: "}
MAX_TOKENS = 32  # small, so the long text is truncated

TEXTS = [
    "A man is eating food.",
    "The disk on node seven is almost full.",
    "How do I rotate the database credentials?",
    "Kubernetes evicted the pod because of memory pressure.",
    "Le serveur de base de données ne répond plus.",
    "Der Speicherplatz auf dem Knoten ist fast voll.",
    "El despliegue falló por un error de configuración.",
    "query latency grew after the index rebuild",
    "x",
    " ".join(["alerts fire when the replica lags behind the primary"] * 12),  # far past MAX_TOKENS
]
CORPUS = (
    TEXTS
    + [
        "the quick brown fox jumps over the lazy dog",
        "embedding models map text to vectors for semantic search",
        "a migration re-embeds every stored document with the new model",
        "les vecteurs de deux modèles ne sont pas comparables",
        "die Suche liefert die nächsten Nachbarn nach Kosinus",
        "la búsqueda devuelve los vecinos más cercanos",
        "shadow reads compare the rankings of two indexes",
        "cutover switches reads only onto a complete index",
    ]
    * 4
)


def wordpiece_tokenizer(workdir: Path) -> BertTokenizer:
    """A WordPiece vocabulary trained on CORPUS (transformers 5's BertTokenizer is the fast one)."""
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1)
    trainer.save_model(str(workdir))
    return BertTokenizer(vocab=str(workdir / "vocab.txt"), do_lower_case=True, model_max_length=MAX_TOKENS)


def sentencepiece_tokenizer(workdir: Path) -> XLMRobertaTokenizer:
    """A sentencepiece unigram model trained on CORPUS, converted by transformers as for xlm-roberta-base."""
    corpus = workdir / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(workdir / "sentencepiece.bpe"),
        vocab_size=400,
        model_type="unigram",
        hard_vocab_limit=False,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
    )
    return XLMRobertaTokenizer.from_pretrained(str(workdir), model_max_length=MAX_TOKENS)


SIZES = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "initializer_range": 0.2,  # wider than the default 0.02, so texts (and CLS tokens) differ visibly
}


def bert(tokenizer, seed: int) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **SIZES)
    return BertModel(config, add_pooling_layer=False).eval()


def xlm_roberta(tokenizer, seed: int) -> XLMRobertaModel:
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_TOKENS + 2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
        **SIZES,
    )
    return XLMRobertaModel(config, add_pooling_layer=False).eval()


def sentence_transformer(model, tokenizer, workdir: Path, pooling: str, normalize: bool) -> SentenceTransformer:
    """A SentenceTransformer around `model`, loaded the way a user would: from a saved Hugging Face folder."""
    hf = workdir / "hf"
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    transformer = models.Transformer(str(hf), max_seq_length=MAX_TOKENS)
    modules = [transformer, models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    if normalize:
        modules.append(models.Normalize())
    return SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu")


def vectors(folder: Path, name: str, *, prompts: bool, fp32: bool = False) -> None:
    """Upstream vectors of TEXTS from the saved folder: documents, and queries where it has prompts."""
    model = SentenceTransformer(str(folder), device="cpu")
    if fp32:
        model = model.float()  # the same weights widened: what driftgate's fp32 graph computes
    kinds = {"embedding": "document", "query_embedding": "query"} if prompts else {"embedding": None}
    encoded = {
        field: model.encode(TEXTS, prompt_name=kind, normalize_embeddings=False, convert_to_numpy=True)
        for field, kind in kinds.items()
    }
    with (OUT / f"{name}.jsonl").open("w") as sink:
        for i, text in enumerate(TEXTS):
            row = {"text": text, **{f: [round(float(x), 7) for x in np.asarray(v[i])] for f, v in encoded.items()}}
            sink.write(json.dumps(row) + "\n")


def old_layout(new: Path, old: Path) -> None:
    """`new` (saved by today's sentence-transformers) rearranged as older versions saved a model."""
    shutil.rmtree(old, ignore_errors=True)
    (old / "0_Transformer").mkdir(parents=True)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ):
        if (new / name).exists():
            shutil.copyfile(new / name, old / "0_Transformer" / name)
    (old / "0_Transformer" / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_TOKENS, "do_lower_case": False})
    )
    shutil.copytree(new / "1_Pooling", old / "1_Pooling")
    pooling = json.loads((new / "1_Pooling" / "config.json").read_text())
    mode = pooling.get("pooling_mode", "mean")
    (old / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": pooling.get("word_embedding_dimension", pooling.get("embedding_dimension")),
                "pooling_mode_cls_token": mode == "cls",
                "pooling_mode_mean_tokens": mode == "mean",
                "pooling_mode_max_tokens": mode == "max",
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if (new / "2_Normalize").exists():
        shutil.copytree(new / "2_Normalize", old / "2_Normalize")
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (old / "modules.json").write_text(json.dumps(modules, indent=2))
    (old / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": PROMPTS, "default_prompt_name": None})
    )


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "wp").mkdir()
        (work / "sp").mkdir()
        wordpiece = wordpiece_tokenizer(work / "wp")
        pieces = sentencepiece_tokenizer(work / "sp")

        for name, make, tokenizer, pooling, normalize, seed, dtype in (
            ("st6-bert", bert, wordpiece, "mean", True, 1, None),
            ("st6-bert-bf16", bert, wordpiece, "cls", False, 2, torch.bfloat16),
            ("st6-bert-fp16", bert, wordpiece, "max", True, 3, torch.float16),
            ("st6-xlm-roberta", xlm_roberta, pieces, "mean", True, 4, None),
        ):
            folder = OUT / name
            shutil.rmtree(folder, ignore_errors=True)
            (work / name).mkdir()
            model = sentence_transformer(make(tokenizer, seed), tokenizer, work / name, pooling, normalize)
            if dtype is not None:
                model = model.to(dtype)
            model.save(str(folder))
            vectors(folder, name, prompts=True, fp32=dtype is not None)

        old_layout(OUT / "st6-bert", OUT / "st-old-layout")
        vectors(OUT / "st-old-layout", "st-old-layout", prompts=True)

        hf = OUT / "hf-bert"
        shutil.rmtree(hf, ignore_errors=True)
        bert(wordpiece, 5).save_pretrained(hf)
        wordpiece.save_pretrained(hf)
        vectors(hf, "hf-bert", prompts=False)  # sentence-transformers' own choice for it: mean pooling

    versions = {
        "python": sys.version.split()[0],
        "sentence-transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "sentencepiece": sentencepiece.__version__,
    }
    (OUT / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n")
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
