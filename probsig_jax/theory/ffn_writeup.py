"""Markdown write-up of the Emb-MLP's small-initialisation gradient flow (PAPER section 6).

:func:`render_ffn_flow_markdown` turns the sympy objects of :mod:`probsig_jax.theory.ffn_derivation`
(``derive_ffn_flow(1)``, ``derive_ffn_flow(2)``, the escape laws and the activation series) into Markdown with
LaTeX; every formula is ``sympy.latex`` of the derivation's own expression (through
:func:`probsig_jax.theory.markdown.latex`), only prose and notation are hand-written. :data:`FFN_DOCUMENT` is the
command line behind ``theory/derive_ffn_flow.py`` (the same ``--check`` / ``--skip-verify`` as the linear
write-up, :func:`probsig_jax.theory.markdown.document_main`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import sympy as sp

from probsig_jax.theory import ffn_derivation as FD
from probsig_jax.theory.markdown import VERIFICATION_MARKER, WriteupDocument, check_table, display, document_main, latex

GENERATOR_COMMAND = "python theory/derive_ffn_flow.py"
DEFAULT_OUT = Path("theory") / "ffn_gradient_flow.md"
DEPTHS = (1, 2)

def _check_section(cheap: set, checks: Mapping[str, bool] | None) -> list[str]:
    out = [VERIFICATION_MARKER, "## 8. Verification", ""]
    if checks is None:
        return out + ["The verification checks were not run for this rendering.", ""]
    n_pass = sum(1 for ok in checks.values() if ok)
    out += [f"{n_pass} of {len(checks)} checks passed. `derive_ffn_flow(k)` runs its checks every time a depth is "
            "derived (and raises if one fails); `verify_ffn_flow` adds the loss expansion, the escape laws and "
            "the activation series.", ""]
    out += check_table(checks, cheap, "derive_ffn_flow", "verify_ffn_flow")
    out += ["The same expansion is checked numerically against `jax.grad` of the network's loss in "
            "`tests/test_ffn_theory.py`: the residual of the leading field falls 4x when eps halves (GELU, relative "
            "O(eps^2), one and two hidden layers), and that of leading + curvature 8x (one hidden layer).", ""]
    return out


def render_ffn_flow_markdown(derivations: Sequence[FD.FFNFlowDerivation] | None = None,
                             checks: Mapping[str, bool] | None = None) -> str:
    """The FFN write-up (deterministic). ``derivations`` default to depths 1 and 2; ``checks`` as for the
    linear write-up (None: no table)."""
    ders = tuple(FD.derive_ffn_flow(k) for k in DEPTHS) if derivations is None else tuple(derivations)
    cheap = {name for der in ders for name in der.checks}
    out: list[str] = []
    add = out.append
    add("# Gradient flow of the Emb-MLP from small initialisation")
    add("")
    add(f"> Generated file: do not edit. Regenerate with `{GENERATOR_COMMAND}`; `{GENERATOR_COMMAND} --check` "
        "fails when this file is stale. Every formula below is `sympy.latex` of an expression built by "
        "`probsig_jax.theory.ffn_derivation`; rendering is in `probsig_jax/theory/ffn_writeup.py`. The JAX "
        "functions of `probsig_jax.theory.ffn` are lambdified from the same expressions.")
    add("")
    add("**Where each result comes from** (PAPER sections 6 and 9). From the paper: the Emb-MLP, and the "
        "statement that at small initialisation its embeddings follow the label signatures, "
        "`dw_s/dt ~ f_s (Q_s - u)^T W2^T W1^T`. This project's own derivation (checked below): the powers of the "
        "activation's Taylor coefficients, the curvature term and its expression through the joint signature "
        "(the structure follows the group's two-input MLP, MODADD section 3), the orders in eps, and the "
        "escape-time law with its constant.")
    add("")

    add("## 1. Model")
    add("")
    add("With $k$ hidden layers and no biases, input counts $c \\in \\mathbb{N}^F$, embedding $E$ ($d \\times F$), "
        "layer weights $W_l$ ($n_{l-1} \\times n_l$, $n_0 = d$) and unembedding $U$ ($V \\times n_k$):")
    add("")
    add("$$\nz(c) = U\\,\\sigma\\big(W_k^T \\cdots \\sigma(W_1^T E c)\\big), \\qquad "
        "L = \\mathbb{E}\\big[-\\log \\mathrm{softmax}(z(c(X)))_Y\\big]\n$$\n")
    add("with a smooth activation $\\sigma(a) = c_1 a + c_2 a^2/2 + c_3 a^3/6 + \\dots$ and every weight of size "
        "$\\epsilon$. The coefficients, from `sympy.series` of the activations the models implement "
        "(`activation_coefficients`):")
    add("")
    add("| activation | $\\sigma(a)$ | $c_1$ | $c_2$ | $c_3$ |")
    add("|---|---|---|---|---|")
    for name, expr in FD.ACTIVATION_EXPRESSIONS.items():
        k1, k2, k3 = FD.activation_coefficients(name)
        add(f"| {name} | ${sp.latex(expr)}$ | ${sp.latex(k1)}$ | ${sp.latex(k2)}$ | ${sp.latex(k3)}$ |")
    for name, why in FD.NON_SMOOTH_ACTIVATIONS.items():
        add(f"| {name} | not covered | | | ({why}) |")
    add("")

    add("## 2. The loss around uniform logits")
    add("")
    add("The logits are $O(\\epsilon^{k+2})$, and $-\\log \\mathrm{softmax}(z)_y = \\log V - (e_y - u\\mathbf{1})^T z + "
        "O(|z|^2)$ (checked with `sympy.series` for $V = 2, 3$). So the flow $\\dot\\theta = -\\nabla L$ is, up to a "
        "relative $O(\\epsilon^{k+2})$, the gradient ascent of the signature potential "
        "$\\Phi(\\theta) = \\mathbb{E}[(e_Y - u\\mathbf{1})^T z(c(X))]$: the data enter only through moments of "
        "$(c, e_Y - u\\mathbf{1})$.")
    add("")

    add("## 3. The activation series")
    add("")
    add("To first order in the curvature $c_2$ the network output is (checked on explicit networks of depth 1 and "
        "2, every weight a sympy symbol, forward mode in the coefficients):")
    add("")
    add("$$\nz = " + latex(FD.leading_coefficient) + " U B_k c + \\sum_{l=1}^{k} "
        + latex(FD.second_order_coefficient) + " \\tilde U_l (B_l c)^{\\circ 2} + O(c_2^2, c_3)\n$$\n")
    add("with $B_l = W_l^T \\cdots W_1^T E$ ($n_l \\times F$), $\\tilde U_l = U W_k^T \\cdots W_{l+1}^T$ ($V \\times n_l$) "
        "and $\\circ 2$ the elementwise square (`leading_coefficient`, `second_order_coefficient`).")
    add("")

    add("## 4. The leading flow: a product of k + 2 linear factors")
    add("")
    add("The first term gives the potential $\\Phi_1 = c_1^k\\,\\mathrm{tr}(M^T U B_k)$ with the signature matrix "
        "$M = \\mathbb{E}[(e_Y - u\\mathbf{1}) c^T]$, whose column $s$ is $f_s (Q_s - u\\mathbf{1})$ (PAPER section 3). "
        "Its fields, by sympy's matrix calculus (`derive_ffn_flow(k).leading_field`):")
    add("")
    for der in ders:
        E, Ws, U, M = der.symbols
        add(f"### {der.depth} hidden layer{'s' if der.depth > 1 else ''}")
        add("")
        add(display(r"\Phi_1", der.leading_potential, "leading_potential"))
        for X, fld in zip((E, *Ws, U), der.leading_field):
            add(display(f"\\frac{{d{sp.latex(X)}}}{{dt}}", fld))
    add("For one hidden layer the embedding of feature $s$ moves as $\\dot e_s = c_1 W U^T M_{:,s} = "
        "c_1 f_s W U^T (Q_s - u\\mathbf{1})$: PAPER's leading-order flow, with the power of $c_1$ settled.")
    add("")

    add("## 5. The curvature term and the joint signature")
    add("")
    add("The $c_2$ term is quadratic in each $B_l c$: pairs of features of one input interact. Its expectation "
        "needs the third moment $T[s, r, y] = \\mathbb{E}[c_s c_r (1\\{Y = y\\} - u)]$, which is "
        "$f_s \\big(J_s (I - u \\mathbf{1}\\mathbf{1}^T)\\big)[r, y]$ with the joint signature "
        "$J_s(r, y) = P(r \\in X, Y = y \\mid s \\in X)$ (`signatures.joint_signature`; counts instead of "
        "indicators when a feature repeats). The curvature potential (`second_order_potential_expression`) is")
    add("")
    add(display(r"\Phi_2", FD.second_order_potential_expression()))
    add("with the layer coefficients, per depth:")
    add("")
    add("| hidden layers | coefficients of layers 1..k |")
    add("|---|---|")
    for der in ders:
        add(f"| {der.depth} | {', '.join('$' + sp.latex(c) + '$' for c in der.second_order_coefficients)} |")
    add("")
    add("So where the leading flow sees each feature's label signature alone, the curvature term sees which "
        "features occur together with which label: tasks whose keys share label signatures but differ in their "
        "co-occurrence structure can only be told apart at this order. `probsig_jax.theory.ffn` evaluates "
        "$\\nabla \\Phi_2$ by JAX autodiff of the same expectation over samples (tested equal to the tensor form).")
    add("")

    add("## 6. Orders in eps")
    add("")
    add("Total degree in the weights of each term's contribution to $d\\theta/dt$ (from the explicit networks):")
    add("")
    add("| hidden layers | leading | curvature ($c_2$) | cubic ($c_3$) | softmax correction |")
    add("|---|---|---|---|---|")
    for der in ders:
        o = der.field_orders
        add(f"| {der.depth} | {o['leading']} | {o['second_order']} | {o['third_order']} | {o['softmax']} |")
    add("")
    add("Relative to the leading field the curvature term is $O(\\epsilon^2)$, so for GELU ($c_2 \\ne 0$) the "
        "residual of the leading field falls 4x when $\\epsilon$ halves and that of leading + curvature 8x; for "
        "tanh ($c_2 = 0$) the leading field alone is already accurate to $O(\\epsilon^3)$ in the one-layer case.")
    add("")

    add("## 7. Escape from the plateau")
    add("")
    add("The leading field is homogeneous of degree $k + 1$ in the weights. For $D$ balanced, aligned factors of "
        "amplitude $a$ the flow reduces to $a' = K a^{D-1}$; `dsolve` gives (`escape_law`):")
    add("")
    for D in (2, 3, 4):
        rhs, t_blow = FD.escape_law(D)
        tail = "" if t_blow is None else f", \\qquad t_{{\\mathrm{{blow}}}} = {sp.latex(t_blow)}"
        add(f"$$\nD = {D}: \\quad a(t) = {sp.latex(rhs)}{tail}\n$$\n")
    add("so the linear model ($D = 2$) escapes on a logarithmic time, $\\log(1/\\epsilon)/\\sigma_1$ (the linear "
        "write-up), while $D \\ge 3$ factors blow up in finite time (`blow_up_time`):")
    add("")
    add(display(r"t_{\mathrm{blow}}", FD.blow_up_time))
    add("Rescaling $\\theta = \\epsilon\\tilde\\theta$, $\\tau = c_1^k \\sigma_1 \\epsilon^k t$ removes $\\epsilon$ from "
        "the leading flow, hence the FFN's power law (`ffn_escape_time`)")
    add("")
    add(display("t^*", FD.ffn_escape_time))
    add("with $\\kappa$ fixed by the normalised initialisation and the escape threshold. For balanced aligned "
        "factors of normalised amplitude $\\tilde a$, $D = k + 2$ and $K = c_1^k \\sigma_1$ "
        "(`balanced_escape_time`, checked equal to the power law with $\\kappa = 1/(k \\tilde a^k)$):")
    add("")
    add(display(r"t^*_{\mathrm{balanced}}", FD.balanced_escape_time))
    add("A random initialisation is neither balanced nor aligned, so `probsig_jax.theory.ffn.predicted_escape_time` "
        "integrates the leading flow from the actual initial weights to the threshold; the exponent $-k$ is the "
        "derived, testable part.")
    add("")
    out += _check_section(cheap, checks)
    return "\n".join(out).rstrip("\n") + "\n"


def _build(skip_verify: bool):
    ders = tuple(FD.derive_ffn_flow(k) for k in DEPTHS)
    cheap = {name: ok for der in ders for name, ok in der.checks.items()}
    return ders, cheap if skip_verify else dict(FD.verify_ffn_flow())


FFN_DOCUMENT = WriteupDocument(
    prog="derive_ffn_flow.py",
    description="Derive the Emb-MLP's small-initialisation gradient flow with sympy, verify it, and write the "
                "Markdown write-up (PAPER section 6).",
    default_out=DEFAULT_OUT, generator_command=GENERATOR_COMMAND, verify_cost="about 10 s",
    build=_build, render=render_ffn_flow_markdown)


def main(argv: Sequence[str] | None = None, *, default_out: Path | None = None) -> int:
    """Command line of ``theory/derive_ffn_flow.py``."""
    return document_main(FFN_DOCUMENT, argv, default_out=default_out)
