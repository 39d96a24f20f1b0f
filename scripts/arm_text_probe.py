"""Diagnostic for instructed episodes (docs/eval/closed_loop.md): how much does the frozen text encoder's output
change when only the arm word changes, against how much it changes between paraphrases of the same task?

For block_hammer_beat and blocks_stack_easy, every seen task paraphrase x every seen arm phrasing is encoded with
"left" and with "right" (mean-pooled over tokens, as the pooled-text pathway does). Prints: the cosine similarity
of a left/right pair and of two paraphrases, how consistent the left-minus-right direction is across sentences,
and whether a linear probe fitted on the seen wordings tells the arm of the unseen ones (the held-out phrasings).
Usage: python scripts/arm_text_probe.py [PREDICTOR]   (default: the embedded predictor's text encoder)"""
import itertools
import sys

import torch

from frameplan_core.data.instructions import ARM_PHRASES, templates
from frameplan_core.predictor import FramePredictor

TASKS = ("block_hammer_beat", "blocks_stack_easy")


def main(model: str = "tiny") -> None:
    torch.manual_seed(0)
    te = FramePredictor.from_pretrained(model, device="cpu").text_encoder

    def pooled(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            e, m = te.encode(texts, return_mask=True)
        m = m.to(e.dtype)[..., None]
        return ((e * m).sum(1) / m.sum(1)).float()

    def sentences(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [(b, p) for t in TASKS for b, p in itertools.product(templates(t)[split], ARM_PHRASES[split])]
        left = pooled([f"{b}, {p.format(side='left')}" for b, p in pairs])
        right = pooled([f"{b}, {p.format(side='right')}" for b, p in pairs])
        return left, right

    left, right = sentences("seen")
    cos = torch.nn.functional.cosine_similarity
    lr = cos(left, right).mean().item()
    para = cos(left[:, None], left[None], dim=-1)
    para = (para.sum() - len(left)) / (len(left) ** 2 - len(left))
    d = torch.nn.functional.normalize(left - right, dim=1)
    direction = ((d @ d.T).sum() - len(d)) / (len(d) ** 2 - len(d))
    ratio = (left - right).norm(dim=1).mean() / (left - left.mean(0)).norm(dim=1).mean()
    print(f"{len(left)} seen sentences: cosine left vs right {lr:.4f}; between paraphrases {para.item():.4f}; "
          f"left-minus-right direction consistency {direction.item():.3f}; "
          f"|left - right| / spread of sentences {ratio.item():.3f}")
    x = torch.cat([left, right])
    y = torch.cat([torch.ones(len(left)), torch.zeros(len(right))])
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits((x - mean) / std @ w + b, y) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    ul, ur = sentences("unseen")
    with torch.no_grad():
        acc_seen = (((x - mean) / std @ w + b > 0).float() == y).float().mean().item()
        ux = torch.cat([ul, ur])
        uy = torch.cat([torch.ones(len(ul)), torch.zeros(len(ur))])
        acc_unseen = (((ux - mean) / std @ w + b > 0).float() == uy).float().mean().item()
    print(f"linear probe for the arm: seen wordings {acc_seen:.1%} ({len(x)}), unseen wordings {acc_unseen:.1%} ({len(ux)})")


if __name__ == "__main__":
    main(*sys.argv[1:2])
