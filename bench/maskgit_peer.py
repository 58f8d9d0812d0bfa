"""MaskGIT transformer train step, vqjax against the same network in plain PyTorch, same CPU.

    python -m bench.maskgit_peer                  # tiny and S; rewrites its table in docs/benchmarks.md
    python -m bench.maskgit_peer --quick          # tiny only, prints only

The step: B=8 token grids of 16x16 plus a class token, 1024 codes, MaskGIT's masking (cosine
schedule), cross-entropy with label smoothing 0.1 on the masked positions, AdamW (lr 1e-4,
betas 0.9/0.96, weight decay 0.045), dropout off, float32. vqjax runs `vqjax.models.maskgit`
(pre-LN transformer, tied MLM head) under one `jax.jit` with the state donated. The peer is what
PyTorch MaskGIT implementations write: `nn.TransformerEncoderLayer(batch_first=True,
norm_first=True, activation="gelu")`, the same embeddings and tied head, `F.cross_entropy(...,
ignore_index=-100, label_smoothing=0.1)`, `torch.optim.AdamW`, all threads. The two alternate, a
step at a time after a warm-up, so that load from other processes hits both alike; the table
gives medians and the ratio (> 1: vqjax faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics

from bench import common

SIZES = {"tiny": (2, 64, 2, 256), "S": (12, 512, 8, 2048)}  # layers, width, heads, mlp


@dataclasses.dataclass
class Row:
    size: str
    vqjax_s: float
    torch_s: float | None
    params: int

    @property
    def ratio(self) -> float | None:
        return self.torch_s / self.vqjax_s if self.torch_s else None


def vqjax_step(size, batch: int, grid: int, vocab: int, classes: int,
               dtype_name: str = "float32", return_compiled: bool = False):
    """`run()` doing one jitted train step (state donated) and the parameter count; with
    `return_compiled`, also the compiled step (for its FLOP count)."""
    import jax
    import jax.numpy as jnp
    import optax

    from vqjax.models import maskgit

    model = maskgit.create("tiny", vocab_size=vocab, num_classes=classes, size=size,
                           dropout_rate=0.0, attention_dropout_rate=0.0,
                           dtype=getattr(jnp, dtype_name))
    tokens = jax.random.randint(jax.random.key(0), (batch, grid, grid), 0, vocab)
    labels = jax.random.randint(jax.random.key(1), (batch,), 0, classes)
    params = model.init(jax.random.key(2), tokens, labels)["params"]
    tx = optax.adamw(1e-4, b1=0.9, b2=0.96, weight_decay=0.045)
    state = (params, tx.init(params), jnp.zeros((), jnp.int32))

    def step(state, tokens, labels):
        params, opt_state, t = state
        masked, mask = maskgit.mask_tokens(jax.random.fold_in(jax.random.key(3), t), tokens,
                                           mask_token_id=model.mask_token_id)

        def loss_fn(p):
            logits = model.apply({"params": p}, masked, labels, train=True)
            return maskgit.masked_cross_entropy(logits, tokens, mask, label_smoothing=0.1)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, t + 1), loss

    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, tokens, labels).compile()
    holder = {"state": state}

    def run():
        holder["state"], loss = compiled(holder["state"], tokens, labels)
        jax.block_until_ready(loss)

    num_params = sum(x.size for x in jax.tree.leaves(params))
    return (run, num_params, compiled) if return_compiled else (run, num_params)


def torch_step(size: str, batch: int, grid: int, vocab: int, classes: int):
    import torch
    import torch.nn.functional as F
    from torch import nn

    layers_, width, heads, mlp = SIZES[size]
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    n = grid * grid

    class Peer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(vocab + 1, width)  # + mask row
            self.classes = nn.Embedding(classes + 1, width)  # + null label
            self.position = nn.Parameter(torch.zeros(1, n + 1, width).normal_(std=0.02))
            self.ln_embed = nn.LayerNorm(width)
            layer = nn.TransformerEncoderLayer(width, heads, mlp, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers_, enable_nested_tensor=False)
            self.ln_final = nn.LayerNorm(width)
            self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
            self.bias = nn.Parameter(torch.zeros(vocab))

        def forward(self, tokens, labels):
            x = torch.cat([self.classes(labels)[:, None], self.tokens(tokens)], 1) + self.position
            h = self.ln_final(self.encoder(self.ln_embed(x)))[:, 1:]
            return self.head(h) @ self.tokens.weight[:vocab].T + self.bias  # tied

    model = Peer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.96), weight_decay=0.045)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (batch, n), generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)

    def run():
        # MaskGIT's masking: per example a cosine-schedule ratio, that many random positions.
        ratio = torch.cos(torch.rand(batch, generator=gen) * torch.pi / 2)
        count = torch.clamp(torch.ceil(ratio * n), 1, n).long()
        order = torch.rand(batch, n, generator=gen).argsort(1).argsort(1)
        mask = order < count[:, None]
        logits = model(torch.where(mask, vocab, tokens), labels)
        targets = torch.where(mask, tokens, -100)
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1),
                               ignore_index=-100, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run, sum(p.numel() for p in model.parameters()), torch.__version__


def measure(size: str, repeats: int, with_torch: bool, batch=8, grid=16, vocab=1024,
            classes=1000) -> tuple[Row, str]:
    ours, num_params = vqjax_step(SIZES[size], batch, grid, vocab, classes)
    peer, torch_version = None, ""
    if with_torch:
        peer, _, torch_version = torch_step(size, batch, grid, vocab, classes)
    ours_t, *peer_t = common.time_calls(list(filter(None, (ours, peer))), repeats, warmup=2)
    return Row(size, statistics.median(ours_t),
               statistics.median(peer_t[0]) if peer_t else None, num_params), torch_version


def table(rows: list[Row]) -> str:
    header = "| size | params | vqjax step | PyTorch step | PyTorch / vqjax |"
    lines = []
    for r in rows:
        torch_s = f"{common.significant(r.torch_s * 1e3)} ms" if r.torch_s else "not installed"
        ratio = f"{r.ratio:.2f}x" if r.ratio else "-"
        lines.append(f"| {r.size} | {r.params / 1e6:.1f}M | {common.significant(r.vqjax_s * 1e3)} ms"
                     f" | {torch_s} | {ratio} |")
    return common.markdown_table(header, lines)


def main(argv=None, command: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny only; do not write the doc")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
        with_torch = not args.no_torch
    except ImportError:
        with_torch = False
        print("torch not installed (pip install -r bench/requirements.txt): vqjax only")
    sizes = ["tiny"] if args.quick else ["tiny", "S"]
    rows, torch_version = [], ""
    for size in sizes:
        repeats = args.repeats or (3 if args.quick else (20 if size == "tiny" else 6))
        row, torch_version = measure(size, repeats, with_torch)
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
    body = table(rows)
    print(body)
    if not (args.quick or args.no_write):
        command = command or common.command_line("bench.maskgit_peer", argv)
        extra = f"torch {torch_version}" if torch_version else ""
        common.write_table("maskgit_peer", "MaskGIT train step against a PyTorch peer", command,
                           body, extra_versions=extra)


if __name__ == "__main__":
    main()
