"""The report-generation probe: a perceiver resampler over frozen features feeding a small causal
text decoder built from open_clip's transformer blocks, with open_clip's bundled BPE tokenizer.

- :class:`ClipVocab`: open_clip BPE ids restricted to those seen in the training reports (plus
  pad/bos/eos/unk), so the output softmax stays small enough for a laptop CPU.
- :class:`PerceiverResampler`: learned queries cross-attend the (pooled) token grid and the
  global embedding, Flamingo-style (keys/values = context + latents).
- :class:`TextDecoder`: token + position embeddings -> open_clip's ``MultimodalTransformer``
  (causal self-attention then cross-attention to the latents, per layer) -> vocabulary logits.
- :func:`train`: teacher forcing (next-token cross-entropy), AdamW, warmup + cosine schedule.
- :func:`greedy` / :func:`beam_search`: decoding over any ``step(latents, ids) -> log-probs``.
- :class:`LLMHead` (optional): a frozen local Hugging Face causal LM reading the latents,
  projected to its hidden size, as a prefix (:func:`load_llm`; needs ``transformers``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import LayerNorm, MultimodalTransformer, ResidualAttentionBlock
from torch import nn

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HEAD_DIM = 32  # attention heads = width // HEAD_DIM


@lru_cache(maxsize=1)
def clip_tokenizer() -> SimpleTokenizer:
    """open_clip's BPE tokenizer; its vocabulary ships inside the package (no download)."""
    return SimpleTokenizer()


def clean(text: str) -> str:
    """Undo the tokenizer's spacing: "5 . 5 mm nodule ." -> "5.5 mm nodule."."""
    text = re.sub(r"(\d) \. (\d)", r"\1.\2", text)
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


class Codec(Protocol):
    """Text <-> token ids, as the decoder (or a language model) sees them."""

    pad: int
    bos: int
    eos: int
    size: int

    def encode(self, text: str, max_len: int) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


class ClipVocab:
    """open_clip BPE ids seen in ``texts``, renumbered compactly after 4 special ids."""

    pad, bos, eos, unk = 0, 1, 2, 3

    def __init__(self, texts: Sequence[str]) -> None:
        tok = clip_tokenizer()
        seen = sorted({i for t in texts for i in tok.encode(str(t))})
        self.to_clip = np.array([-1, -1, -1, -1, *seen], dtype=np.int64)
        self.to_local = {c: j + 4 for j, c in enumerate(seen)}
        self.size = len(self.to_clip)

    def encode(self, text: str, max_len: int) -> list[int]:
        """``[bos, ..., eos]``; a report longer than ``max_len`` is cut (and has no eos)."""
        ids = [self.to_local.get(i, self.unk) for i in clip_tokenizer().encode(str(text))]
        return ([self.bos, *ids, self.eos])[:max_len]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i > self.unk:
                out.append(int(self.to_clip[i]))
        return clean(clip_tokenizer().decode(out))


class PerceiverResampler(nn.Module):
    """``n_queries`` learned latents that cross-attend the frozen features.

    Context = the global embedding split into ``n_emb_tokens`` projected tokens, plus (when the
    model has a grid) the pooled grid tokens projected to ``width`` with a learned position
    embedding per grid cell.
    """

    def __init__(self, emb_dim: int, token_dim: int | None, grid_len: int, width: int,
                 depth: int, n_queries: int = 16, n_emb_tokens: int = 4) -> None:
        super().__init__()
        self.n_emb_tokens, self.width = n_emb_tokens, width
        self.emb_proj = nn.Linear(emb_dim, n_emb_tokens * width)
        self.tok_proj = nn.Linear(token_dim, width) if token_dim else None
        self.tok_pos = nn.Parameter(torch.zeros(grid_len, width)) if token_dim else None
        self.queries = nn.Parameter(torch.randn(n_queries, width) * 0.02)
        self.layers = nn.ModuleList(
            ResidualAttentionBlock(width, max(1, width // HEAD_DIM), is_cross_attention=True)
            for _ in range(depth))
        self.ln = LayerNorm(width)

    def forward(self, emb: torch.Tensor, grid: torch.Tensor | None = None) -> torch.Tensor:
        ctx = self.emb_proj(emb).view(len(emb), self.n_emb_tokens, self.width)
        if self.tok_proj is not None and grid is not None:
            ctx = torch.cat([ctx, self.tok_proj(grid) + self.tok_pos], dim=1)
        lat = self.queries.unsqueeze(0).expand(len(emb), -1, -1)
        for block in self.layers:
            kv = torch.cat([ctx, lat], dim=1)
            lat = block(lat, k_x=kv, v_x=kv)
        return self.ln(lat)


class TextDecoder(nn.Module):
    """Causal text decoder over ``vocab`` ids conditioned on resampled latents."""

    def __init__(self, vocab: int, width: int, depth: int, max_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.01)
        self.drop = nn.Dropout(0.1)
        self.blocks = MultimodalTransformer(width, depth, max(1, width // HEAD_DIM),
                                            context_length=max_len, output_dim=vocab)
        nn.init.normal_(self.blocks.text_projection, std=width**-0.5)  # created uninitialised

    def forward(self, latents: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(ids) + self.pos[: ids.shape[1]])
        return self.blocks(latents, x)


class ReportModel(nn.Module):
    """Resampler + a text head (``head(latents, ids) -> logits``, next-token aligned)."""

    def __init__(self, resampler: PerceiverResampler, head: nn.Module) -> None:
        super().__init__()
        self.resampler, self.head = resampler, head

    def forward(self, emb: torch.Tensor, grid: torch.Tensor | None, ids: torch.Tensor):
        return self.head(self.resampler(emb, grid), ids)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one fit (``lr`` and ``epochs`` are tuned; the rest are fixed)."""

    lr: float
    epochs: int
    batch_size: int = 8
    weight_decay: float = 0.01
    warmup: float = 0.05
    clip: float = 1.0


def _batch(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and a mask of the positions whose *next* token is a real target."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T - 1), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s) - 1] = True
    return ids, mask


def train(model: ReportModel, emb: torch.Tensor, grid: torch.Tensor | None,
          seqs: list[list[int]], pad: int, cfg: TrainConfig, seed: int) -> list[float]:
    """Teacher-forced next-token training; returns the mean loss of every epoch."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    n, bs = len(seqs), min(cfg.batch_size, len(seqs))
    total = cfg.epochs * math.ceil(n / bs)
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / total))))
    device = emb.device
    model.train()
    history = []
    for _ in range(cfg.epochs):
        order, losses = torch.randperm(n, generator=gen), []
        for k in range(0, n, bs):
            idx = order[k: k + bs]
            ids, mask = _batch([seqs[i] for i in idx], pad)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(emb[idx.to(device)], None if grid is None else grid[idx.to(device)],
                           ids[:, :-1])
            loss = nn.functional.cross_entropy(logits[mask], ids[:, 1:][mask])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
    model.eval()
    return history


@torch.no_grad()
def greedy(step: Step, latents: torch.Tensor, bos: int, eos: int, max_len: int) -> list[list[int]]:
    """Most likely next token at every step, batched; sequences stop at ``eos``."""
    ids = torch.full((len(latents), 1), bos, dtype=torch.long, device=latents.device)
    done = torch.zeros(len(latents), dtype=torch.bool, device=latents.device)
    for _ in range(max_len - 1):
        nxt = step(latents, ids).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == eos
        if done.all():
            break
    return [_strip(row, eos) for row in ids.tolist()]


def _strip(seq: list[int], eos: int) -> list[int]:
    out = seq[1:]
    return out[: out.index(eos) + 1] if eos in out else out


@torch.no_grad()
def beam_search(step: Step, latents: torch.Tensor, bos: int, eos: int, max_len: int,
                beam: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search per case; hypotheses are ranked by log-prob / length**length_penalty.

    A case stops once it holds ``beam`` finished hypotheses; at ``max_len`` unfinished beams
    compete too.
    """
    results = []
    for b in range(len(latents)):
        lat = latents[b: b + 1]
        alive: list[tuple[float, list[int]]] = [(0.0, [bos])]
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_len - 1):
            ids = torch.tensor([s for _, s in alive], dtype=torch.long, device=latents.device)
            logp = step(lat.expand(len(alive), -1, -1), ids)
            cand = (torch.tensor([sc for sc, _ in alive], device=logp.device)[:, None] + logp)
            top = cand.flatten().topk(min(2 * beam, cand.numel()))
            nxt = []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                src, tok = divmod(flat, logp.shape[1])
                seq = alive[src][1] + [tok]
                if tok == eos:
                    finished.append((score / (len(seq) - 1) ** length_penalty, seq))
                elif len(nxt) < beam:
                    nxt.append((score, seq))
            alive = nxt
            if len(finished) >= beam or not alive:
                break
        else:  # max_len reached: unfinished beams compete too
            finished += [(sc / max(1, len(s) - 1) ** length_penalty, s) for sc, s in alive]
        best = max(finished, key=lambda f: f[0])[1]
        results.append(_strip(best, eos))
    return results


def model_step(model: ReportModel) -> Step:
    """``step`` for the decoders: log-probabilities of the token after ``ids``."""
    return lambda lat, ids: model.head(lat, ids)[:, -1].float().log_softmax(-1)


@torch.no_grad()
def generate(model: ReportModel, emb: torch.Tensor, grid: torch.Tensor | None, codec: Codec,
             max_len: int, beam: int = 1, batch: int = 32) -> list[str]:
    """Reports for every case (greedy when ``beam == 1``)."""
    model.eval()
    out: list[str] = []
    for k in range(0, len(emb), batch):
        lat = model.resampler(emb[k: k + batch], None if grid is None else grid[k: k + batch])
        if beam > 1:
            seqs = beam_search(model_step(model), lat, codec.bos, codec.eos, max_len, beam)
        else:
            seqs = greedy(model_step(model), lat, codec.bos, codec.eos, max_len)
        out += [codec.decode(s) for s in seqs]
    return out


# -- optional text head: a frozen local Hugging Face causal LM with a trained prefix -----------

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ClipCodec:
    """open_clip's full BPE vocabulary, for a language model folder that ships no tokenizer."""

    def __init__(self) -> None:
        tok = clip_tokenizer()
        self.bos, self.eos = tok.sot_token_id, tok.eot_token_id
        self.pad, self.size = self.eos, len(tok.encoder)

    def encode(self, text: str, max_len: int) -> list[int]:
        return [self.bos, *clip_tokenizer().encode(str(text)), self.eos][:max_len]

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        ids = ids[: ids.index(self.eos)] if self.eos in ids else ids
        return clean(clip_tokenizer().decode([i for i in ids if i != self.bos]))


class HFCodec:
    """A Hugging Face tokenizer behind the :class:`Codec` interface."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.eos = tokenizer.eos_token_id
        self.bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.size = len(tokenizer)

    def encode(self, text: str, max_len: int) -> list[int]:
        return [self.bos, *self.tok.encode(str(text), add_special_tokens=False), self.eos][:max_len]

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        ids = ids[: ids.index(self.eos)] if self.eos in ids else ids
        return clean(self.tok.decode(ids, skip_special_tokens=True))


def check_llm_path(path: str) -> Path:
    """The folder of a local causal LM, or one clear error naming it, what is missing and the
    fix (:func:`ctbench.tasks.llm_check.check_llm_folder`); cheap, so it runs before extraction."""
    from .llm_check import check_llm_folder

    return check_llm_folder(path)


def load_llm(path: str) -> tuple[nn.Module, Codec]:
    """Load a local causal LM (never from the network), frozen, and its codec: the folder's own
    tokenizer, else open_clip's BPE ids when the LM's vocabulary covers them. A folder that
    passes :func:`check_llm_path` but cannot be loaded is one error naming it, not a traceback."""
    from ctbench.errors import CTBenchError

    folder = check_llm_path(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # any loading failure: the folder's content, named in one line
        raise CTBenchError(f"--llm {path}: transformers cannot load the model there ({type(e).__name__}: "
                           f"{_first_line(e)}); re-save it with save_pretrained") from e
    lm.requires_grad_(False).eval()
    if any((folder / f).is_file() for f in _TOKENIZER_FILES):
        try:
            codec: Codec = HFCodec(AutoTokenizer.from_pretrained(folder, local_files_only=True))
        except Exception as e:
            raise CTBenchError(f"--llm {path}: transformers cannot load the tokenizer there "
                               f"({type(e).__name__}: {_first_line(e)}); re-save it with save_pretrained, "
                               f"or remove the tokenizer files to use open_clip's") from e
    else:
        codec = ClipCodec()
        if lm.get_input_embeddings().num_embeddings < codec.size:
            raise CTBenchError(f"--llm {path}: the folder has no tokenizer and the model's "
                               f"vocabulary is smaller than open_clip's ({codec.size} ids)")
    return lm, codec


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no message"


class LLMHead(nn.Module):
    """Frozen causal LM; the resampled latents, projected to its hidden size, are its prefix."""

    def __init__(self, lm: nn.Module, width: int) -> None:
        super().__init__()
        self.lm = lm
        hidden = lm.get_input_embeddings().embedding_dim
        self.proj = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def train(self, mode: bool = True) -> "LLMHead":
        super().train(mode)
        self.lm.eval()  # frozen: no dropout either
        return self

    def forward(self, latents: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        embed = self.lm.get_input_embeddings()
        prefix = self.proj(latents).to(embed.weight.dtype)
        x = torch.cat([prefix, embed(ids)], dim=1)
        return self.lm(inputs_embeds=x).logits[:, latents.shape[1]:]
