"""The order in which training visits images: a pure function of (seed, step), so resume is exact
and N processes sharing a global batch see the batch one process would.

- `BatchOrder`: every image once per epoch (a seeded permutation per epoch).
- `GroupOrder`: every GROUP once per epoch, then one of its members drawn uniformly. Emoji come
  in groups of very different sizes (a waving hand has 6 skin tones x 2 styles, a pizza 2
  styles), so plain epochs spend half their draws on skin-tone people; drawing the subject first
  gives every subject the same share of training. Groups come from `ImageCaptionSet.groups`.
"""
from __future__ import annotations

import torch

from ..seeds import torch_seed

ORDERS = ("image", "group")


class BatchOrder:
    """Global batch b = positions [bB, (b+1)B) of an endless stream of per-epoch permutations."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._perms = n, seed, {}

    @property
    def epoch_size(self) -> int:
        return self.n

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(torch_seed(self.seed * 1_000_003 + epoch))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int, B: int) -> torch.Tensor:
        """(B,) int64 image indices of global batch `step`."""
        pos = torch.arange(step * B, (step + 1) * B)
        ep = pos // self.epoch_size
        return torch.cat([self.perm(e)[pos[ep == e] % self.epoch_size] for e in ep.unique().tolist()])


class GroupOrder(BatchOrder):
    """Position p of the stream: epoch p // G, the (p % G)-th group of that epoch's permutation of
    the G groups, and within it the member picked by that epoch's uniform draw."""

    def __init__(self, groups: list[str], seed: int):
        uniq = sorted(set(groups))
        gid = {g: k for k, g in enumerate(uniq)}
        keys = torch.tensor([gid[g] for g in groups])
        self.members = torch.argsort(keys, stable=True)  # image indices, grouped, index order inside
        self.sizes = torch.bincount(keys, minlength=len(uniq))  # (G,)
        self.offsets = torch.cumsum(self.sizes, 0) - self.sizes  # (G,) start of each group in members
        super().__init__(len(uniq), seed)

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(torch_seed(self.seed * 1_000_003 + epoch))
            groups = torch.randperm(self.n, generator=g)  # (G,)
            u = torch.rand(self.n, generator=g, dtype=torch.float64)
            pick = (u * self.sizes[groups]).long()  # uniform member index in [0, size]
            self._perms[epoch] = self.members[self.offsets[groups] + torch.minimum(pick, self.sizes[groups] - 1)]
        return self._perms[epoch]


class MixOrder:
    """Weighted parts, then balanced groups: each draw picks a part of an 'A+B' dataset with
    probability `weights[part]`, then a group of that part uniformly, then a member uniformly --
    all with replacement, from a generator seeded by (seed, step), so a batch is a pure function
    of (seed, step) with no epoch state. Why: with group balancing alone, the share of a
    procedural set (shapes:N) is N / (N + emoji groups), tied to a dataset size; this names it."""

    def __init__(self, groups: list[str], parts: list[int], weights: list[float], seed: int):
        n_parts = max(parts) + 1
        if len(weights) != n_parts:
            raise ValueError(f"mix gives {len(weights)} weights for a dataset of {n_parts} parts")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {weights}")
        w = torch.tensor(weights, dtype=torch.float64)
        present = torch.bincount(torch.tensor(parts), minlength=n_parts) > 0
        self.weights = torch.where(present, w, torch.zeros_like(w))  # a part with no images is never drawn
        self.seed = seed
        self.parts = []  # per part: (GroupOrder-style members, sizes, offsets) over its groups
        for k in range(n_parts):
            idx = [i for i, p in enumerate(parts) if p == k]
            sub = GroupOrder([groups[i] for i in idx], 0) if idx else None
            self.parts.append((torch.tensor(idx), sub))
        self.epoch_size = len(set(groups))  # nominal: for progress reports only

    def indices(self, step: int, B: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(torch_seed(self.seed * 1_000_003 + 7_777_777 + step))
        part = torch.multinomial(self.weights, B, replacement=True, generator=g)  # (B,)
        u_group = torch.rand(B, generator=g, dtype=torch.float64)
        u_member = torch.rand(B, generator=g, dtype=torch.float64)
        out = torch.empty(B, dtype=torch.long)
        for k in part.unique().tolist():
            rows = (part == k).nonzero().squeeze(1)
            idx, sub = self.parts[k]
            grp = (u_group[rows] * sub.n).long().clamp(max=sub.n - 1)
            pick = torch.minimum((u_member[rows] * sub.sizes[grp]).long(), sub.sizes[grp] - 1)
            out[rows] = idx[sub.members[sub.offsets[grp] + pick]]
        return out


def parse_mix(text: str) -> list[float]:
    """'0.6,0.4' -> [0.6, 0.4]; ValueError on anything else."""
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"mix must be comma-separated numbers, one per dataset part, got {text!r}") from None


def make_order(kind: str, groups: list[str], seed: int, parts: list[int] | None = None, mix: str = "") -> BatchOrder:
    """`kind` "image" (plain epochs over the images) or "group" (balanced over `groups`); with
    `mix` (weights per part of an 'A+B' dataset), a `MixOrder` (needs kind "group")."""
    if mix:
        if kind != "group":
            raise ValueError("mix weights need order 'group'")
        return MixOrder(groups, parts if parts is not None else [0] * len(groups), parse_mix(mix), seed)
    if kind == "image":
        return BatchOrder(len(groups), seed)
    if kind == "group":
        return GroupOrder(groups, seed)
    raise ValueError(f"unknown batch order {kind!r}; choose from {ORDERS}")
