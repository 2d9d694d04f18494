"""LoRA aggregation beyond averaging factors: `svd` (best rank r) and `exact` (FedEx-LoRA).

Averaging A and B separately is not the average of the updates: B̄Ā ≠ Σ wᵢ BᵢAᵢ.

- `svd` re-factorises Σ wᵢ BᵢAᵢ at rank r (Eckart–Young best approximation). The mean is formed
  implicitly as [w₁B₁ … wₙBₙ] · [A₁; …; Aₙ] and factorised through QR of both sides plus an SVD of
  the small (n·r × n·r) core, so nothing of size d_out × d_in is ever built. Exact only when the
  clients' updates have rank ≤ r together (e.g. shared A).
- `exact` (FedEx-LoRA, Singhal et al. 2024): the global adapter is (B̄, Ā) and the residual
  Σ wᵢBᵢAᵢ − B̄Ā = Σ wᵢ(Bᵢ − B̄)(Aᵢ − Ā) (rank ≤ (n−1)·r) is folded into the frozen base weight, so
  base + R + B̄Ā equals base + Σ wᵢBᵢAᵢ to float tolerance, round after round. The server keeps the
  residual accumulated since round 0 in the global ArrayRecord under `lora-residual/…` names, in
  BA units (the applier multiplies by the layer's LoRA scaling): per module either as factors
  `<key>.B` (d_out×K) and `<key>.A` (K×d_in), re-compressed every round to their numerical rank K,
  or as the dense `<key>.W` (d_out×d_in) once factors would cost more. Checkpoints and the final
  arrays therefore hold it; on the wire it travels as the train instruction's own ArrayRecord
  `lora-residual` (the reply contract and the up-link codec see only the adapter). A client needs
  only that record, whatever rounds it missed: it is the whole residual since round 0, never a delta.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Message

from pollen.errors import PayloadError
from pollen.models.peft_methods import RESIDUAL_FILE, add_residual  # noqa: F401  (re-exported)

# The train instruction's ArrayRecord that carries the residual (FedEx-LoRA down-link).
RESIDUAL_RECORD = "lora-residual"
# Names of residual tensors inside the global ArrayRecord (and in checkpoints).
RESIDUAL_PREFIX = "lora-residual/"
# The run's exported residual, in weight units, keyed by the base model's parameter names.


def lora_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(A name, B name) pairs as peft names them (`...lora_A.<adapter>.weight`)."""
    pairs = []
    for a in names:
        if ".lora_A." in a:
            b = a.replace(".lora_A.", ".lora_B.")
            if b in names:
                pairs.append((a, b))
    return pairs


def _core(B_cat: np.ndarray, A_cat: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SVD of B_cat·A_cat without forming it: (qb, u, s, vt, qa) with B_cat·A_cat = qb·u·diag(s)·vt·qaᵀ."""
    qb, rb = np.linalg.qr(B_cat)
    qa, ra = np.linalg.qr(A_cat.T)
    u, s, vt = np.linalg.svd(rb @ ra.T)
    return qb, u, s, vt, qa


def _factors(qb: np.ndarray, u: np.ndarray, s: np.ndarray, vt: np.ndarray, qa: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray]:
    root = np.sqrt(s[:k])
    return (qb @ u[:, :k]) * root, (root[:, None] * vt[:k]) @ qa.T


def merge_svd(As: list[np.ndarray], Bs: list[np.ndarray], weights: np.ndarray,
              rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-`rank` factors (A: r×d_in, B: d_out×r) of Σ w_i B_i A_i (Eckart–Young)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    B_cat = np.concatenate([wi * b.astype(np.float64) for wi, b in zip(w, Bs)], axis=1)  # d_out×nr
    A_cat = np.concatenate([a.astype(np.float64) for a in As], axis=0)  # nr×d_in
    qb, u, s, vt, qa = _core(B_cat, A_cat)
    k = min(rank, len(s))
    B, A = _factors(qb, u, s, vt, qa, k)
    if k < rank:  # keep the configured shape; the extra directions carry zero weight
        B = np.pad(B, ((0, 0), (0, rank - k)))
        A = np.pad(A, ((0, rank - k), (0, 0)))
    return A.astype(As[0].dtype), B.astype(Bs[0].dtype)


# ---- exact (FedEx-LoRA) -------------------------------------------------------------------------

def residual_key(a_name: str) -> str:
    """`X.lora_A.default.weight` -> `lora-residual/X.default` (module path and adapter name)."""
    module, rest = a_name.split(".lora_A.", 1)
    return f"{RESIDUAL_PREFIX}{module}.{rest.removesuffix('.weight')}"


def residual_of(state: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """The tensors of one module's residual (`.A`/`.B` or `.W`), keyed by their kind."""
    return {kind: state[f"{key}.{kind}"] for kind in ("A", "B", "W") if f"{key}.{kind}" in state}


def residual_matrix(parts: dict[str, np.ndarray]) -> np.ndarray:
    """The residual as a dense d_out×d_in matrix (BA units), float64."""
    if "W" in parts:
        return parts["W"].astype(np.float64)
    return parts["B"].astype(np.float64) @ parts["A"].astype(np.float64)


def fold(As: list[np.ndarray], Bs: list[np.ndarray], weights: np.ndarray,
         previous: dict[str, np.ndarray] | None = None
         ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """FedEx-LoRA for one module: (Ā, B̄, residual) with R_new + B̄Ā = R_prev + Σ wᵢBᵢAᵢ.

    The residual is accumulated exactly in float64 and stored in the inputs' dtype: as factors
    re-compressed to their numerical rank while K·(d_out + d_in) < d_out·d_in, else dense.
    """
    dtype = As[0].dtype
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    A_mean = sum(wi * a.astype(np.float64) for wi, a in zip(w, As)).astype(dtype)
    B_mean = sum(wi * b.astype(np.float64) for wi, b in zip(w, Bs)).astype(dtype)
    # Σ wᵢBᵢAᵢ − B̄Ā with the stored (rounded) means, so the identity holds for what is stored.
    B_cat = [wi * b.astype(np.float64) for wi, b in zip(w, Bs)] + [-B_mean.astype(np.float64)]
    A_cat = [a.astype(np.float64) for a in As] + [A_mean.astype(np.float64)]
    previous = previous or {}
    d_out, d_in = B_mean.shape[0], A_mean.shape[1]
    if "W" in previous:
        dense = previous["W"].astype(np.float64) + np.concatenate(B_cat, 1) @ np.concatenate(A_cat, 0)
        return A_mean, B_mean, {"W": dense.astype(dtype)}
    if previous:
        B_cat.insert(0, previous["B"].astype(np.float64))
        A_cat.insert(0, previous["A"].astype(np.float64))
    Bc, Ac = np.concatenate(B_cat, 1), np.concatenate(A_cat, 0)
    qb, u, s, vt, qa = _core(Bc, Ac)
    # Numerical rank relative to the terms (not to their sum: the residual is a difference, and
    # what cancels leaves rounding noise at the terms' scale): directions at the float64 noise of
    # this computation, or at the rounding of the stored means (a few eps of the stored dtype), go.
    scale = np.linalg.norm(Bc, 2) * np.linalg.norm(Ac, 2)
    tol = scale * max(max(d_out, d_in) * np.finfo(np.float64).eps, 4 * np.finfo(dtype).eps)
    k = max(1, int((s > tol).sum()))  # an all-zero residual still keeps one (zero) direction
    if k * (d_out + d_in) >= d_out * d_in:
        return A_mean, B_mean, {"W": (Bc @ Ac).astype(dtype)}
    B, A = _factors(qb, u, s, vt, qa, k)
    return A_mean, B_mean, {"A": A.astype(dtype), "B": B.astype(dtype)}


def split_residual(arrays: ArrayRecord) -> tuple[ArrayRecord, ArrayRecord]:
    """The global ArrayRecord as (adapter tensors, residual tensors)."""
    adapter = ArrayRecord({k: v for k, v in arrays.items() if not k.startswith(RESIDUAL_PREFIX)})
    residual = ArrayRecord({k: v for k, v in arrays.items() if k.startswith(RESIDUAL_PREFIX)})
    return adapter, residual


def attach_residual(messages: Iterable[Message], residual: ArrayRecord) -> list[Message]:
    """Add the residual record to each train instruction (nothing when there is no residual yet)."""
    messages = list(messages)
    if len(residual):
        for m in messages:
            m.content[RESIDUAL_RECORD] = residual
    return messages


# ---- applying the residual to a model (clients, the server's evaluation model, export) ----------

# The untouched base weights of each model whose base weights hold a residual. A Runtime model is
# shared by every virtual client of a process, so each use sets base = W0 + s·R from scratch.
_ORIGINAL: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.Tensor]] = (
    weakref.WeakKeyDictionary())


def _lora_base(model: torch.nn.Module, key: str, field: str) -> tuple[torch.nn.Parameter, float]:
    """The base weight and LoRA scaling of the layer a residual key names."""
    path, _, adapter = key[len(RESIDUAL_PREFIX):].rpartition(".")
    try:
        layer = model.get_submodule(path)
    except AttributeError:
        raise PayloadError(f"no LoRA layer {path!r} in this model", field=field) from None
    scaling = getattr(layer, "scaling", None)
    base = getattr(layer, "base_layer", None)
    if not isinstance(scaling, dict) or adapter not in scaling or base is None:
        raise PayloadError(f"{path!r} has no LoRA adapter {adapter!r}", field=field)
    return base.weight, float(scaling[adapter])


def _check_parts(key: str, parts: dict[str, np.ndarray], shape: tuple[int, int]) -> None:
    d_out, d_in = shape
    if set(parts) == {"W"}:
        want = {"W": shape}
    elif set(parts) == {"A", "B"}:
        k = parts["B"].shape[1] if parts["B"].ndim == 2 else -1
        if not 1 <= k <= min(d_out, d_in):
            raise PayloadError(f"rank {k} outside [1, {min(d_out, d_in)}]", field=f"{key}.B")
        want = {"B": (d_out, k), "A": (k, d_in)}
    else:
        raise PayloadError(f"needs .A and .B or .W, got {sorted(parts)}", field=key)
    for kind, arr in parts.items():
        if tuple(arr.shape) != want[kind]:
            raise PayloadError(f"shape {tuple(arr.shape)} != {want[kind]}", field=f"{key}.{kind}")
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise PayloadError("must be finite floats", field=f"{key}.{kind}")


def apply_residual(model: torch.nn.Module, residual: dict[str, np.ndarray]) -> None:
    """Set every LoRA layer's base weight to W0 + scaling·R (W0 alone where R is absent).

    `residual` is what the server sent (untrusted): unknown layers, wrong shapes, ranks or
    non-finite values raise one PayloadError before any weight changes.
    """
    if not residual and model not in _ORIGINAL:
        return  # no residual now or before: the base weights are the model's own
    keys = sorted({k.rpartition(".")[0] for k in residual})
    planned = []
    for key in keys:
        if not key.startswith(RESIDUAL_PREFIX):
            raise PayloadError("not a residual tensor name", field=key)
        weight, scaling = _lora_base(model, key, key)
        parts = residual_of(residual, key)
        if len(parts) != sum(1 for k in residual if k.rpartition(".")[0] == key):
            raise PayloadError("unknown residual part (use .A, .B or .W)", field=key)
        _check_parts(key, parts, tuple(weight.shape))
        planned.append((key, weight, scaling, parts))
    original = _ORIGINAL.setdefault(model, {})
    with torch.no_grad():
        params = dict(model.named_parameters())
        name_of = {id(p): n for n, p in params.items()}
        for name, w0 in original.items():  # layers the previous state touched: back to W0
            params[name].copy_(w0)
        for key, weight, scaling, parts in planned:
            name = name_of[id(weight)]
            w0 = original.setdefault(name, weight.detach().clone())
            delta = torch.from_numpy(residual_matrix(parts) * scaling).to(w0.device)
            weight.copy_(w0.to(torch.float64).add(delta).to(weight.dtype))


def received_residual(content) -> dict[str, np.ndarray]:
    """The residual record of a train instruction ({} when the server sent none)."""
    if RESIDUAL_RECORD not in content:
        return {}
    record = content[RESIDUAL_RECORD]
    if not isinstance(record, ArrayRecord):
        raise PayloadError("must be an ArrayRecord", field=RESIDUAL_RECORD)
    return {k: v.numpy() for k, v in record.items()}


def load_global(model: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Load a global state (adapter tensors plus any residual) into a PEFT model."""
    from pollen.models.peft_methods import load_trainable_state

    load_trainable_state(model, {k: v for k, v in state.items() if not k.startswith(RESIDUAL_PREFIX)})
    apply_residual(model, {k: v for k, v in state.items() if k.startswith(RESIDUAL_PREFIX)})


def save_residual(model: torch.nn.Module, state: dict[str, np.ndarray], target: Path) -> Path | None:
    """Write the global state's residual in weight units (scaling·R) next to the adapter.

    Keys are the base model's own parameter names (`model.layers.0.self_attn.q_proj.weight`), so
    `add_residual(AutoModelForCausalLM.from_pretrained(base), file)` then
    `PeftModel.from_pretrained(model, adapter_dir)` rebuilds the global model. None: no residual.
    """
    from safetensors.torch import save_file

    keys = sorted({k.rpartition(".")[0] for k in state if k.startswith(RESIDUAL_PREFIX)})
    if not keys:
        return None
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {}
    for key in keys:
        weight, scaling = _lora_base(model, key, key)
        plain = names[id(weight)].removeprefix("base_model.model.").replace(".base_layer.", ".")
        tensors[plain] = torch.from_numpy(residual_matrix(residual_of(state, key)) * scaling).to(
            weight.dtype).contiguous()
    path = target / RESIDUAL_FILE
    tmp = target / f".{RESIDUAL_FILE}.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(path)
    return path

