"""Deliberately naive, loop-based losses written from the definitions (DESIGN §2).

They loop over classes and pairs in Python on float64 scalars: slow but obviously right,
and differentiable, so both values and gradients of the vectorised losses can be checked.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _lse(values: list[Tensor]) -> Tensor:
    return torch.logsumexp(torch.stack(values), dim=0)


def _cos(features: Tensor) -> Tensor:
    x = features.double()
    return x / x.norm(dim=1, keepdim=True)


def naive_sparse_pairwise(features: Tensor, labels: Tensor, temperature: float, mode: str):
    x = _cos(features)
    s = 1.0 / temperature
    y = labels.tolist()
    classes = sorted(set(y))
    if len(classes) < 2:
        return torch.zeros((), dtype=torch.float64)
    members = {a: [i for i, v in enumerate(y) if v == a] for a in classes}

    def sim(i: int, j: int) -> Tensor:
        return torch.dot(x[i], x[j])

    losses = []
    for a in classes:
        ia = members[a]
        h = -_lse([-s * sim(i, j) for i in ia for j in ia])
        q = [-_lse([-s * sim(i, j) for j in ia]) for i in ia]
        lh = _lse(q)
        if mode == "sp-h":
            p = h
        elif mode == "sp-lh":
            p = lh
        else:
            hh, ll = float(h.detach()) / s, float(lh.detach()) / s
            w = 0.0 if hh < 0 or hh + ll == 0 else 2 * hh * ll / (hh + ll)
            p = w * h + (1 - w) * lh
        negs = [_lse([s * sim(i, j) for i in ia for j in members[b]]) for b in classes if b != a]
        losses.append(-p + _lse([p, *negs]))
    return torch.stack(losses).mean()


def _dist(features: Tensor, i: int, j: int) -> Tensor:
    d = features[i].double() - features[j].double()
    return torch.sqrt((d * d).sum().clamp_min(1e-12))


def naive_triplet(features: Tensor, labels: Tensor, margin: float) -> Tensor:
    y = labels.tolist()
    n = len(y)
    out = []
    for a in range(n):
        pos = [_dist(features, a, p) for p in range(n) if y[p] == y[a]]
        neg = [_dist(features, a, q) for q in range(n) if y[q] != y[a]]
        if not neg:
            continue
        gap = torch.stack(pos).max() - torch.stack(neg).min()
        out.append(torch.nn.functional.softplus(gap) if margin == 0 else (gap + margin).relu())
    return torch.stack(out).mean() if out else torch.zeros((), dtype=torch.float64)


def naive_supcon(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    x = _cos(features)
    y = labels.tolist()
    n = len(y)
    out = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and y[p] == y[i]]
        if not pos:
            continue
        denom = _lse([torch.dot(x[i], x[a]) / temperature for a in range(n) if a != i])
        terms = [torch.dot(x[i], x[p]) / temperature - denom for p in pos]
        out.append(-torch.stack(terms).mean())
    return torch.stack(out).mean() if out else torch.zeros((), dtype=torch.float64)


def naive_multi_similarity(features, labels, thresh=0.5, margin=0.1, alpha=2.0, beta=40.0):
    x = _cos(features)
    y = labels.tolist()
    n = len(y)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        pos = [torch.dot(x[i], x[p]) for p in range(n) if p != i and y[p] == y[i]]
        neg = [torch.dot(x[i], x[q]) for q in range(n) if y[q] != y[i]]
        if not pos or not neg:
            continue
        min_pos = min(float(v.detach()) for v in pos)
        max_neg = max(float(v.detach()) for v in neg)
        mneg = [v for v in neg if float(v.detach()) + margin > min_pos]
        mpos = [v for v in pos if float(v.detach()) - margin < max_neg]
        if not mneg or not mpos:
            continue
        pl = torch.log(1 + sum(torch.exp(-alpha * (v - thresh)) for v in mpos)) / alpha
        nl = torch.log(1 + sum(torch.exp(beta * (v - thresh)) for v in mneg)) / beta
        total = total + pl + nl
    return total / n


def naive_circle(features, labels, margin=0.25, gamma=128.0):
    x = _cos(features)
    y = labels.tolist()
    n = len(y)
    out = []
    for i in range(n):
        sp = [torch.dot(x[i], x[p]) for p in range(n) if p != i and y[p] == y[i]]
        sn = [torch.dot(x[i], x[q]) for q in range(n) if y[q] != y[i]]
        if not sp or not sn:
            continue
        lp = [-gamma * max(0.0, 1 + margin - float(v.detach())) * (v - (1 - margin)) for v in sp]
        ln = [gamma * max(0.0, float(v.detach()) + margin) * (v - margin) for v in sn]
        out.append(torch.nn.functional.softplus(_lse(lp) + _lse(ln)))
    return torch.stack(out).mean() if out else torch.zeros((), dtype=torch.float64)


def naive_easy_positive(features, labels, sigma=0.1):
    x = _cos(features)
    y = labels.tolist()
    n = len(y)
    out = []
    for i in range(n):
        sp = [torch.dot(x[i], x[p]) for p in range(n) if p != i and y[p] == y[i]]
        sn = [torch.dot(x[i], x[q]) for q in range(n) if y[q] != y[i]]
        if not sp or not sn:
            continue
        ap, an = torch.stack(sp).max(), torch.stack(sn).max()
        out.append(
            -torch.log(torch.exp(ap / sigma) / (torch.exp(ap / sigma) + torch.exp(an / sigma)))
        )
    return torch.stack(out).mean() if out else torch.zeros((), dtype=torch.float64)


def naive_cross_entropy(logits, labels, epsilon=0.1):
    n, c = logits.shape
    out = []
    for i in range(n):
        logp = torch.log_softmax(logits[i].double(), dim=0)
        target = [(1 - epsilon) * (k == int(labels[i])) + epsilon / c for k in range(c)]
        out.append(-sum(t * logp[k] for k, t in enumerate(target)))
    return torch.stack(out).mean()
