"""Decoding several requests at once equals decoding them one by one, values and gradients."""

import torch

from ghn.decoder import ConvDecoder


def test_decode_many_equals_one_by_one():
    torch.manual_seed(0)
    dec = ConvDecoder(8, (16, 32), (6, 5, 3, 4), num_classes=7)
    xs = [torch.randn(n, 8) for n in (3, 2, 4, 1)]
    reqs = [(xs[0], (2, 3), 4, 2, False), (xs[1], (3, 4), None, None, False), (xs[2], (1, 1), 6, 3, True),
            (xs[3], (2, 3), 4, 2, False)]
    together = dec.decode(reqs)
    dec.zero_grad()
    sum(b.square().sum() for b in together).backward()
    grads = {k: p.grad.clone() for k, p in dec.named_parameters()}
    singles = [dec.classifier(x, i) if cls else dec(x, k, o, i) for x, k, o, i, cls in reqs]
    assert [b.shape for b in together] == [(3, 4, 2, 2, 3), (2, 6, 5, 3, 4), (4, 7, 3), (1, 4, 2, 2, 3)]
    for a, b in zip(together, singles):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    dec.zero_grad()
    sum(b.square().sum() for b in singles).backward()
    for k, p in dec.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-5, atol=1e-6, msg=k)
