"""A label-free Matryoshka objective that keeps what a frozen base embedding already knows (after Matryoshka-Adaptor,
Yoon et al., EMNLP 2024). For each prefix (MatryoshkaLoss applies it at every nesting dim m), up to four terms:

  batch        within the batch, each row's distribution of cosine similarities to the other rows (softmax at `tau`)
               matches the base embedding's at full dimension (KL divergence, listwise: the nearest weigh most).
  neighbours   each row's cosine to each of its top-k base neighbours matches the base's full-dim cosine (mean
               absolute difference, the paper's top-k loss): the top of the list, where retrieval is decided. A random
               batch of a large corpus rarely holds an item's real neighbours, so the caller may mine them over the
               whole corpus once (`mrl.metrics.cosine_top_k` on the base) and put them in the batch:
               `SimilarityTarget(base, neighbours)`, neighbours[i] the batch rows of row i's top k; the batch term then
               also sees them. Given a plain base tensor, the term mines each row's top k within the batch.
  reconstruction  1 - cos(adapted full embedding, base embedding): keeps an adapter's full dim near the base it
               started from. It applies at the prefix as wide as the base (an adapter's output; an image head narrower
               than its backbone has none).
  instance     InfoNCE between two views of each item (`instance_weight`): invariance to what the views vary (crop,
               colour, compression); the image head's two-view batches.

The defaults (batch term only, instance as given) are the objective the image head was measured with: on photo footage
(bench/photo_video.py, 104 queries), over a frozen EfficientNet-Lite0, with instance_weight 0.2 it gave frame R@1
0.44-0.60 at 16-128 dims where InfoNCE alone gave 0.41-0.47 and PCA 0.38-0.54. The text adapter's measurements, with
corpus neighbours and reconstruction: bench/results/text.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SimilarityTarget:
    """What a prefix is compared with: the base rows of the batch, and optionally each anchor's neighbours. MatryoshkaLoss
    passes one target to every prefix: what depends on the base alone is computed for the first and kept here."""

    base: torch.Tensor  # (n, D) base embeddings of the batch's rows (centred by the caller if it wants centred cosines)
    neighbours: torch.Tensor | None = None  # (A, k) int: row indices (into the batch) of rows :A's top-k base neighbours
    cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)


class SimilarityPreserving(nn.Module):
    def __init__(self, tau: float = 0.05, instance_weight: float = 0.0, temperature: float = 0.1, *,
                 batch_weight: float = 1.0, neighbour_weight: float = 0.0, neighbours: int = 10,
                 reconstruction_weight: float = 0.0):
        super().__init__()
        if not tau > 0 or not temperature > 0:
            raise ValueError(f"SimilarityPreserving: tau and temperature must be > 0, got {tau}, {temperature}")
        weights = {"instance_weight": instance_weight, "batch_weight": batch_weight,
                   "neighbour_weight": neighbour_weight, "reconstruction_weight": reconstruction_weight}
        for name, w in weights.items():
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"SimilarityPreserving: {name} must be finite and >= 0, got {w}")
        if not sum(weights.values()) > 0:
            raise ValueError(f"SimilarityPreserving: every term's weight is 0 ({weights})")
        if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
            raise ValueError(f"SimilarityPreserving: neighbours must be an integer >= 1, got {neighbours}")
        self.tau, self.instance_weight, self.temperature = tau, instance_weight, temperature
        self.batch_weight, self.neighbour_weight = batch_weight, neighbour_weight
        self.neighbours, self.reconstruction_weight = neighbours, reconstruction_weight

    def forward(self, prefix: torch.Tensor, target: torch.Tensor | SimilarityTarget, dim_index: int = 0) -> torch.Tensor:
        """`prefix`: (n, m) the batch's embeddings (for the instance term: view a of B items, then view b); `target`:
        the base rows (n, D), or a SimilarityTarget. Returns the weighted sum of the terms."""
        weights = {"batch": self.batch_weight, "neighbours": self.neighbour_weight,
                   "reconstruction": self.reconstruction_weight, "instance": self.instance_weight}
        terms = self.terms(prefix, target)
        return sum((weights[name] * value for name, value in terms.items()), prefix.new_zeros(()))

    def terms(self, prefix: torch.Tensor, target: torch.Tensor | SimilarityTarget) -> dict[str, torch.Tensor]:
        """Each term with a non-zero weight, unweighted (for logging and tests)."""
        target = target if isinstance(target, SimilarityTarget) else SimilarityTarget(target)
        base = target.base
        if len(base) != len(prefix):
            raise ValueError(f"SimilarityPreserving: {len(prefix)} prefix rows but {len(base)} base rows")
        z = F.normalize(prefix, dim=-1)
        b = self._base_side(target, "b", lambda: F.normalize(base.float(), dim=-1))
        out: dict[str, torch.Tensor] = {}
        if self.batch_weight:
            out["batch"] = self._batch_kl(z, target)
        if self.neighbour_weight:
            out["neighbours"] = self._neighbour_term(z, target)
        if self.reconstruction_weight and prefix.shape[-1] >= base.shape[-1]:
            if prefix.shape[-1] > base.shape[-1]:
                raise ValueError(f"SimilarityPreserving: reconstruction compares a {prefix.shape[-1]}-dim embedding "
                                 f"with a {base.shape[-1]}-dim base; they must be as wide")
            out["reconstruction"] = (1 - (z * b).sum(-1)).mean()
        if self.instance_weight:
            half = len(z) // 2
            logits = z[:half] @ z[half:2 * half].T / self.temperature
            labels = torch.arange(half, device=z.device)
            out["instance"] = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return out

    def _base_side(self, target: SimilarityTarget, name: str, compute):
        """What depends on the base alone, computed once per target (not per prefix), without gradients."""
        key = (name, self.tau, self.neighbours)
        if key not in target.cache:
            with torch.no_grad():
                target.cache[key] = compute()
        return target.cache[key]

    def _batch_kl(self, z: torch.Tensor, target: SimilarityTarget) -> torch.Tensor:
        """KL(base || prefix) of each row's softmax over the other rows, summed over rows, / n."""
        n = len(z)
        own = torch.eye(n, dtype=torch.bool, device=z.device)

        def base_distribution():
            b = self._base_side(target, "b", lambda: F.normalize(target.base.float(), dim=-1))
            p = F.softmax((b @ b.T).masked_fill(own, float("-inf")) / self.tau, dim=1)
            return p, torch.xlogy(p, p).sum()  # and its negative entropy, the KL's constant part

        p, neg_entropy = self._base_side(target, "batch", base_distribution)
        log_q = F.log_softmax((z @ z.T).masked_fill(own, float("-inf")) / self.tau, dim=1)
        return (neg_entropy - (p * log_q.masked_fill(own, 0.0)).sum()) / n

    def _neighbour_term(self, z: torch.Tensor, target: SimilarityTarget) -> torch.Tensor:
        """Mean |cos(prefix_i, prefix_j) - cos(base_i, base_j)| over each anchor i's neighbours j."""

        def base_cosines():
            b = self._base_side(target, "b", lambda: F.normalize(target.base.float(), dim=-1))
            neighbours = target.neighbours
            if neighbours is None:  # mine each row's top k within the batch, by the base
                sims = (b @ b.T).fill_diagonal_(float("-inf"))
                neighbours = sims.topk(min(self.neighbours, len(b) - 1), dim=1).indices
            if neighbours.ndim != 2 or not neighbours.shape[1]:
                raise ValueError(f"SimilarityPreserving: neighbours must be (anchors, k >= 1) row indices, "
                                 f"got shape {tuple(neighbours.shape)}")
            return neighbours, torch.einsum("ad,akd->ak", b[:len(neighbours)], b[neighbours])

        neighbours, cos = self._base_side(target, "neighbours", base_cosines)
        anchors = len(neighbours)
        return (torch.einsum("am,akm->ak", z[:anchors], z[neighbours]) - cos).abs().mean()

    def get_config_dict(self) -> dict:
        return {"tau": self.tau, "batch_weight": self.batch_weight, "neighbour_weight": self.neighbour_weight,
                "neighbours": self.neighbours, "reconstruction_weight": self.reconstruction_weight,
                "instance_weight": self.instance_weight, "temperature": self.temperature}
