"""Optional compiled CPU loops for the sLSTM scan: the same arithmetic as `SLSTMScan`, in C++.

Built on first use with torch's inline extension loader (needs a C++ compiler and ninja) and
cached by torch; if the build fails, or BIOXLSTM_NO_EXTENSIONS=1 is set, `load()` returns None and
the pure-PyTorch loops run instead. Only the pointwise gate arithmetic is hand-written; the
recurrent matmuls stay with ATen.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from types import ModuleType

_SOURCE = r"""
#include <torch/extension.h>
#include <cmath>

#include <ATen/Parallel.h>

template <typename T> static inline T sigmoid(T x) {
  const T e = std::exp(-std::abs(x));
  return x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}
// log sigmoid(f) and sigmoid(-f) from one exponential
template <typename T> static inline void forget_terms(T f, T& lf, T& sf) {
  const T e = std::exp(-std::abs(f)), l = std::log1p(e);
  lf = f >= 0 ? -l : f - l;
  sf = f >= 0 ? e / (T(1) + e) : T(1) / (T(1) + e);
}

// xs (S, B, 4, NH, DH) gate inputs with bias; R (NH, DH, 4 DH); state (B, NH, DH) each.
// Returns hs, cs, ns (S + 1, B, NH, DH), acts (S, B, 5, NH, DH) = ig, fg, tanh z, sig o, sig -f,
// and the end stabiliser m (B, NH, DH).
std::vector<at::Tensor> forward(at::Tensor xs, at::Tensor R, at::Tensor h0, at::Tensor c0,
                                at::Tensor n0, at::Tensor m0) {
  const int64_t S = xs.size(0), B = xs.size(1), NH = xs.size(3), DH = xs.size(4);
  auto opts = xs.options();
  auto hs = at::empty({S + 1, B, NH, DH}, opts), cs = at::empty_like(hs), ns = at::empty_like(hs);
  auto acts = at::empty({S, B, 5, NH, DH}, opts);
  auto m = m0.clone().contiguous();
  hs[0].copy_(h0); cs[0].copy_(c0); ns[0].copy_(n0);
  AT_DISPATCH_FLOATING_TYPES(xs.scalar_type(), "slstm_forward", [&] {
    const scalar_t* x = xs.data_ptr<scalar_t>();
    scalar_t* H = hs.data_ptr<scalar_t>(); scalar_t* C = cs.data_ptr<scalar_t>();
    scalar_t* N = ns.data_ptr<scalar_t>(); scalar_t* A = acts.data_ptr<scalar_t>();
    scalar_t* M = m.data_ptr<scalar_t>();
    const int64_t step = B * NH * DH;
    for (int64_t t = 0; t < S; ++t) {
      auto rec = at::bmm(hs[t].transpose(0, 1), R).contiguous();  // (NH, B, 4 DH)
      const scalar_t* r = rec.data_ptr<scalar_t>();
      at::parallel_for(0, B * NH, 16, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
          const int64_t b = bh / NH, h = bh % NH;
          for (int64_t d = 0; d < DH; ++d) {
            const int64_t s = (b * NH + h) * DH + d;
            const scalar_t* xt = x + ((t * B + b) * 4 * NH + h) * DH + d;
            const scalar_t* rt = r + (h * B + b) * 4 * DH + d;
            const scalar_t ir = xt[0] + rt[0], fr = xt[NH * DH] + rt[DH];
            const scalar_t zr = xt[2 * NH * DH] + rt[2 * DH], orr = xt[3 * NH * DH] + rt[3 * DH];
            scalar_t lf, sf;
            forget_terms(fr, lf, sf);
            const scalar_t c = C[t * step + s], n = N[t * step + s], mp = M[s];
            const scalar_t mn = n == 0 ? ir : std::max(ir, lf + mp);
            const scalar_t ig = std::exp(ir - mn), fg = std::exp(lf + mp - mn);
            const scalar_t tz = std::tanh(zr), so = sigmoid(orr);
            const scalar_t cn = fg * c + ig * tz, nn = fg * n + ig;
            C[(t + 1) * step + s] = cn; N[(t + 1) * step + s] = nn;
            H[(t + 1) * step + s] = so * cn / nn; M[s] = mn;
            scalar_t* a = A + ((t * B + b) * 5 * NH + h) * DH + d;
            a[0] = ig; a[NH * DH] = fg; a[2 * NH * DH] = tz; a[3 * NH * DH] = so; a[4 * NH * DH] = sf;
          }
      }
      });
    }
  });
  return {hs, cs, ns, acts, m};
}

// Back-propagation through time. d_out (S, B, NH, DH), dh_end (B, NH, DH), Rt (NH, 4 DH, DH).
// Returns d_raw in (S, NH, B, 4, DH) layout and the gradients of h0, c0, n0.
std::vector<at::Tensor> backward(at::Tensor d_out, at::Tensor dh_end, at::Tensor Rt, at::Tensor hs,
                                 at::Tensor cs, at::Tensor ns, at::Tensor acts) {
  const int64_t S = acts.size(0), B = acts.size(1), NH = acts.size(3), DH = acts.size(4);
  auto d_raw = at::empty({S, NH, B, 4, DH}, acts.options());
  auto dh_rec = dh_end.clone().contiguous();
  auto dc = at::zeros_like(dh_rec), dn = at::zeros_like(dh_rec);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "slstm_backward", [&] {
    const scalar_t* G = d_out.data_ptr<scalar_t>(); const scalar_t* A = acts.data_ptr<scalar_t>();
    const scalar_t* C = cs.data_ptr<scalar_t>(); const scalar_t* N = ns.data_ptr<scalar_t>();
    scalar_t* D = d_raw.data_ptr<scalar_t>();
    scalar_t* DC = dc.data_ptr<scalar_t>(); scalar_t* DN = dn.data_ptr<scalar_t>();
    const int64_t step = B * NH * DH;
    for (int64_t t = S - 1; t >= 0; --t) {
      const scalar_t* dr = dh_rec.data_ptr<scalar_t>();  // (B, NH, DH)
      at::parallel_for(0, B * NH, 16, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
          const int64_t b = bh / NH, h = bh % NH;
          for (int64_t d = 0; d < DH; ++d) {
            const int64_t s = (b * NH + h) * DH + d;
            const scalar_t* a = A + ((t * B + b) * 5 * NH + h) * DH + d;
            const scalar_t ig = a[0], fg = a[NH * DH], tz = a[2 * NH * DH];
            const scalar_t so = a[3 * NH * DH], sf = a[4 * NH * DH];
            const scalar_t c = C[(t + 1) * step + s], n = N[(t + 1) * step + s];
            const scalar_t dh = G[t * step + s] + dr[s];
            const scalar_t r = c / n;
            const scalar_t dcs = DC[s] + dh * so / n, dns = DN[s] - dh * so * r / n;
            scalar_t* g = D + (((t * NH + h) * B + b) * 4) * DH + d;
            g[0] = (dcs * tz + dns) * ig;
            g[DH] = (dcs * C[t * step + s] + dns * N[t * step + s]) * fg * sf;
            g[2 * DH] = dcs * ig * (1 - tz * tz);
            g[3 * DH] = dh * r * so * (1 - so);
            DC[s] = dcs * fg; DN[s] = dns * fg;
          }
      }
      });
      dh_rec = at::bmm(d_raw[t].view({NH, B, 4 * DH}), Rt).transpose(0, 1).contiguous();
    }
  });
  return {d_raw, dh_rec, dc, dn};
}
"""


@cache
def load() -> ModuleType | None:
    """The compiled module, built once per machine and cached by torch; None if unavailable."""
    if os.environ.get("BIOXLSTM_NO_EXTENSIONS") == "1":
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        return load_inline(name="bioxlstm_slstm_cpu_v2", cpp_sources=[_SOURCE],
                           functions=["forward", "backward"], extra_cflags=["-O3"])
    except Exception as err:  # any build failure means: use the PyTorch loops
        print(f"bioxlstm: sLSTM CPU kernel unavailable, using PyTorch loops ({err})"[:300],
              file=sys.stderr)
        return None
