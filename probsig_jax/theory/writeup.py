"""Markdown write-up of the linear model's gradient-flow theory (PAPER section 4).

:func:`render_linear_flow_markdown` turns the sympy objects of
:func:`probsig_jax.theory.derivation.derive_linear_flow` into a Markdown document
with LaTeX: every derived formula in it is ``sympy.latex`` of the derivation's own
expression (through :func:`latex`, which only renames a few auxiliary symbols),
so the document cannot drift from the code that :mod:`probsig_jax.theory.compiled`
turns into JAX functions. Only the prose and the notation (definitions of symbols)
are written by hand.

:func:`main` is the command line behind ``theory/derive_linear_flow.py``: it
verifies the derivation (:func:`~probsig_jax.theory.derivation.verify_linear_flow`),
renders the document and writes it atomically, or with ``--check`` reports
whether the committed file is stale (:func:`probsig_jax.theory.markdown.document_main`, shared with the
FFN write-up). The output is deterministic: the same derivation and checks give byte-identical text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import sympy as sp

from probsig_jax.theory import derivation as D
from probsig_jax.theory.markdown import (VERIFICATION_MARKER, WriteupDocument, check_table, display, document_main,
                                         latex)
from probsig_jax.theory.markdown import split_verification

__all__ = ["GENERATOR_COMMAND", "LINEAR_DOCUMENT", "latex", "main", "render_linear_flow_markdown", "split_verification"]

GENERATOR_COMMAND = "python theory/derive_linear_flow.py"
DEFAULT_OUT = Path("theory") / "linear_gradient_flow.md"

def _shape(sym: sp.MatrixSymbol) -> str:
    rows, cols = sym.shape
    return f"${sp.latex(rows)} \\times {sp.latex(cols)}$"


def _matrix_symbols() -> list[tuple[sp.MatrixSymbol, str]]:
    return [
        (D.E, "embedding (column $s$ is the embedding of feature $s$)"),
        (D.U, "unembedding (row $y$ is the output vector of label $y$)"),
        (D.M, r"signature matrix $\mathbb{E}[(e_Y - u\mathbf{1})\,c(X)^T]$ (PAPER section 3)"),
        (D.G, r"gradient matrix $\mathbb{E}[(e_Y - \mathrm{softmax}(z))\,c(X)^T]$"),
        (D.Yw, "one-hot labels of the $N$ samples, row $i$ scaled by the normalised sample weight $w_i$"),
        (D.Pw, "softmax probabilities of the $N$ samples, rows scaled by $w_i$"),
        (D.C, "feature counts $c(x_i)$ of the $N$ samples"),
        (D.Sigma, r"second moment $\mathbb{E}[c\,c^T]$ of the counts"),
        (D.ones, "all-ones column"),
        (D.A0, "$E(0)^T$"),
        (D.B0, "$U(0)$"),
        (D.Pr, "left singular vectors of $M$ (compact SVD $M = P S Q^T$, rank $r$)"),
        (D.Qr, "right singular vectors of $M$"),
        (D.dA, "change of the mode coordinates, $Q^T A(t) - Q^T A_0$"),
        (D.dB, "change of the mode coordinates, $P^T B(t) - P^T B_0$"),
    ]


def _check_section(der: D.LinearFlowDerivation, checks: Mapping[str, bool] | None) -> list[str]:
    out = [VERIFICATION_MARKER, "## 9. Verification", ""]
    if checks is None:
        out += ["The verification checks were not run for this rendering "
                "(`render_linear_flow_markdown(checks=None)`).", ""]
        return out
    cheap = set(der.checks)
    n_pass = sum(1 for ok in checks.values() if ok)
    out += [
        f"{n_pass} of {len(checks)} checks passed. `derive_linear_flow` runs the cheap symbolic checks "
        "every time the derivation is built (and raises if one fails); `verify_linear_flow` adds the "
        "expensive ones: entry-by-entry differentiation of the loss, the softmax series, and the closed "
        "form substituted into the ODE.",
        "",
    ]
    return out + check_table(checks, cheap, "derive_linear_flow", "verify_linear_flow")


def render_linear_flow_markdown(derivation: D.LinearFlowDerivation | None = None,
                                checks: Mapping[str, bool] | None = None) -> str:
    """The write-up of the linear gradient flow as Markdown with LaTeX (``$$ ... $$`` blocks).

    Args:
      derivation: the derived expressions; default :func:`derive_linear_flow`.
      checks: named check results, e.g. :func:`verify_linear_flow` (all checks) or
        ``derivation.checks`` (the cheap ones). ``None`` renders no table; the
        verification section then says so.

    Returns:
      The document, ending in a newline. Deterministic: equal inputs give identical text.
    """
    der = D.derive_linear_flow() if derivation is None else derivation
    sig, t, a0, b0 = der.mode_scalars
    A = sp.MatrixSymbol("A", D.F, D.d)
    B = sp.MatrixSymbol("B", D.V, D.d)
    lin = {D.G: D.M, D.U: B, D.E: A.T}
    lin_dA = der.flow_E.xreplace(lin).T.doit()
    lin_dB = der.flow_U.xreplace(lin).doit()
    block = sp.BlockMatrix([[sp.ZeroMatrix(D.F, D.F), D.M.T], [D.M, sp.ZeroMatrix(D.V, D.V)]])
    stacked = sp.BlockMatrix([[A], [B]])
    collapsed = sp.block_collapse(sp.MatMul(block, stacked))
    if not (collapsed.blocks[0, 0] == lin_dA and collapsed.blocks[1, 0] == lin_dB):
        raise AssertionError(f"block form {collapsed} does not match the linearised flow {lin_dA}, {lin_dB}")
    sig_k = sp.Symbol("sigma_k", positive=True)
    cosh_k = der.mode_propagator[0, 0].subs(sig, sig_k)
    sinh_k = der.mode_propagator[0, 1].subs(sig, sig_k)
    gram_poly = sp.Poly(der.expected_mode_gram_series, t)
    t2_coeff = gram_poly.coeff_monomial(t**2)
    t2_ratio = sp.simplify(t2_coeff / sig**2)
    escape_log = der.escape_time.rewrite(sp.log)
    escape_ratio = sp.limit(der.escape_time * sig / sp.log(1 / D.eps), D.eps, 0, "+")
    escape_leading = sp.log(2 * D.theta / (D.d * D.eps**2)) / (2 * sig)
    escape_rest = sp.limit(der.escape_time - escape_leading, D.eps, 0, "+")

    out: list[str] = []
    add = out.append
    add("# Gradient flow of the linear model")
    add("")
    add(f"> Generated file: do not edit. Regenerate with `{GENERATOR_COMMAND}`; "
        f"`{GENERATOR_COMMAND} --check` fails when this file is stale. Every formula below is "
        "`sympy.latex` of an expression built by `probsig_jax.theory.derivation.derive_linear_flow` "
        "(the field name is shown above it); rendering is in `probsig_jax/theory/writeup.py`.")
    add("")
    add("This is the analytic core of PAPER section 4: a linear embedding model trained by gradient "
        "flow from small initialisation, whose embeddings move along the data's probability "
        "signatures. The same expressions are lambdified into JAX functions "
        "(`probsig_jax.theory.compiled`) that `probsig_jax.theory.linear` uses for the closed form, "
        "the predicted Gram matrices, the escape time and the numerically integrated flows.")
    add("")
    add("**Where each result comes from** (PAPER section 9). From the paper (its abstract and public "
        "reviews): the model, the gradient-flow propositions for the embedding and unembedding "
        "matrices (stated there with the counts $N_x^{in}$, $N_{x,\\nu}$) and their validity in the "
        "early, near-linear phase after small initialisation, and the role of the co-occurrence "
        "signature at the next order. This project's own derivation (checked symbolically below; PAPER "
        "section 4 reports the numerical checks): the exact form of the signature matrix $M$, the closed-form "
        "solution through the SVD of $M$, the expected Gram matrices, the growth amplitude and the "
        "escape time, and the explicit matrix form of the next-order softmax correction. Where the "
        "paper may differ in a detail, the project keeps its own version (PAPER section 9).")
    add("")

    add("## 1. Notation")
    add("")
    add("$V$ labels (the vocabulary), $F$ input features ($F = V$ for bag-of-tokens counts, "
        "$F = V L$ with positional features), $d$ the width, $N$ samples, $u = 1/V$ the uniform "
        "probability, $c(x) \\in \\mathbb{N}^F$ the feature counts of input $x$, $e_y$ the one-hot "
        "vector of label $y$, and $\\mathbb{E}$ the (weighted) mean over the data. Matrix symbols of "
        "the derivation, with the shapes they are declared with:")
    add("")
    add("| symbol | shape | meaning |")
    add("|---|---|---|")
    for sym, meaning in _matrix_symbols():
        add(f"| ${latex(sym)}$ | {_shape(sym)} | {meaning} |")
    add("")

    add("## 2. Model and loss")
    add("")
    add("The input is embedded as $h = E\\,c(x)$ and read out as logits $z = U h = U E\\,c(x)$; the "
        "loss of one sample with label $y$ is the softmax cross-entropy $\\ell = -\\log "
        "\\mathrm{softmax}(z)_y$, which sympy writes as")
    add("")
    add(display(r"\ell", der.loss_scalar, "loss_scalar"))
    add("and the training loss is its mean $L(E, U) = \\mathbb{E}[\\ell]$ over the data.")
    add("")

    add("## 3. The gradient")
    add("")
    add("With the gradient matrix $G = \\mathbb{E}[(e_Y - \\mathrm{softmax}(z(X)))\\,c(X)^T]$ "
        "the gradients of the loss are")
    add("")
    add(display(r"\nabla_E L", der.loss_gradient_E, "loss_gradient_E"))
    add(display(r"\nabla_U L", der.loss_gradient_U, "loss_gradient_U"))
    add("These matrix formulas are checked without automatic differentiation: `verify_linear_flow` "
        "builds the loss of one sample of an explicit model ($V = 3$, $d = 2$, every entry of $E$, "
        "$U$, $c$ a sympy symbol), differentiates it with `sympy.diff` entry by entry for each "
        "label, and compares every entry with $-U^T (e_y - p)\\,c^T$ and $-(e_y - p)(E c)^T$; "
        "averaging over samples gives the two lines above. On a data set of $N$ samples, with "
        "labels and probabilities stacked into rows scaled by the sample weights, $G$ is")
    add("")
    add(display("G", der.gradient_matrix, "gradient_matrix"))

    add("## 4. The gradient-flow ODE")
    add("")
    add("Gradient flow $\\dot\\theta = -\\nabla L$ (gradient descent with learning rate $\\eta$ "
        "follows it at $t = k\\eta$ after $k$ steps, up to $O(\\eta)$) is, exactly,")
    add("")
    add(display(r"\frac{dE}{dt}", der.flow_E, "flow_E"))
    add(display(r"\frac{dU}{dt}", der.flow_U, "flow_U"))
    add("It is nonlinear through $G$, which depends on $E$ and $U$ through the softmax. "
        "`probsig_jax.theory.linear.integrate_flow(order=\"exact\")` integrates it numerically.")
    add("")

    add("## 5. Small initialisation: the linearised flow")
    add("")
    add("If the entries of $E(0)$ and $U(0)$ have scale $\\epsilon$, the logits are $O(\\epsilon^2)$. "
        "For such small logits the softmax expands around the uniform distribution; with "
        "$w_j = z_j - \\bar z$ ($\\bar z$ the mean logit), to first order")
    add("")
    add(display(r"\mathrm{softmax}(z)_j", der.softmax_first_order, "softmax_first_order"))
    add("where the term linear in $z$ is $O(\\epsilon^2)$. `verify_linear_flow` checks this series, and the second-order term of "
        "section 8, against `sympy.series` of the softmax for $V = 2, 3, 4$. At leading order the "
        "softmax is the uniform $u\\mathbf{1}$, so $G$ becomes the signature matrix "
        "$M = \\mathbb{E}[(e_Y - u\\mathbf{1})\\,c(X)^T]$ (section 8 gives the next term). "
        "Substituting $G \\to M$ in the flow and writing $A = E^T$ ($F \\times d$), $B = U$ "
        "($V \\times d$) gives the linearised flow")
    add("")
    add(display(r"\frac{dA}{dt}", lin_dA))
    add(display(r"\frac{dB}{dt}", lin_dB))
    add("that is, a linear ODE with a constant block matrix built from the data alone:")
    add("")
    add(display(r"\frac{d}{dt}" + latex(stacked), sp.MatMul(block, stacked)))
    add("Column $s$ of $M$ is $f_s (Q_s - u\\mathbf{1})$, the frequency-weighted, centred label "
        "signature of feature $s$ (PAPER section 3): each embedding moves along its signature.")
    add("")

    add("## 6. Closed form through the SVD of M")
    add("")
    add("With the compact SVD $M = P S Q^T$, $S = \\mathrm{diag}(\\sigma_1, \\dots, \\sigma_r)$, the "
        "mode coordinates $a_k = q_k^T A$ and $b_k = p_k^T B$ (each a row of $d$ numbers) decouple: "
        "singular value $\\sigma$ couples $(a, b)$ through the generator")
    add("")
    add(display("K", der.mode_generator, "mode_generator"))
    add("whose exponential, computed by sympy and rewritten in hyperbolic functions, is the mode "
        "propagator")
    add("")
    add(display(r"e^{K t}", der.mode_propagator, "mode_propagator"))
    add("so that one mode evolves as")
    add("")
    add(display("a(t)", der.mode_update_a, "mode_update_a"))
    add(display("b(t)", der.mode_update_b, "mode_update_b"))
    add(f"Assembling the modes, with $C_h = \\mathrm{{diag}}_k\\big({latex(cosh_k)}\\big)$ and "
        f"$S_h = \\mathrm{{diag}}_k\\big({latex(sinh_k)}\\big)$ ($r \\times r$), the closed form of "
        "the linearised flow is")
    add("")
    add(display("A(t)", der.closed_form_A, "closed_form_A"))
    add(display("B(t)", der.closed_form_B, "closed_form_B"))
    add("Components of $A_0$ outside the range of $Q$ and of $B_0$ outside the range of $P$ keep "
        "their initial values. The change of the embedding alone is")
    add("")
    add(display(r"A(t) - A_0", der.closed_form_A_matrix, "closed_form_A_matrix"))
    add("The package evaluates the closed form mode by mode (no $V \\times V$ or $F \\times F$ "
        "products): it updates $a = Q^T A_0$, $b = P^T B_0$ with `mode_update_a`/`mode_update_b` "
        "and assembles")
    add("")
    add(display("A(t)", der.closed_form_assembly_A, "closed_form_assembly_A"))
    add(display("B(t)", der.closed_form_assembly_B, "closed_form_assembly_B"))
    add("`derive_linear_flow` checks that the propagator equals the matrix exponential and solves "
        "$\\dot\\Phi = K\\Phi$, $\\Phi(0) = I$; `verify_linear_flow` substitutes the assembled matrix "
        "closed form, for an explicit $M = P S Q^T$ with rotations $P$, $Q$ and two distinct "
        "singular values, into $dA/dt = M^T B$, $dB/dt = M A$ and the initial conditions.")
    add("")

    add("## 7. Expected Gram, growth amplitude and escape time")
    add("")
    add("Take the entries of $A_0$ and $B_0$ i.i.d. $\\mathcal{N}(0, \\epsilon^2)$ (isotropic small "
        "initialisation). Per mode and per width coordinate the cross term averages out and")
    add("")
    add(display(r"\mathbb{E}\left[a(t)^2\right]", der.expected_mode_gram, "expected_mode_gram"))
    add("hence the expected embedding Gram is $\\mathbb{E}[A A^T] = \\epsilon^2 d\\,[I + Q(\\cosh(2 S t) "
        "- I)Q^T]$ (and the unembedding Gram the same with $P$: output signatures). For small $t$")
    add("")
    add(display(r"\frac{\mathbb{E}\left[a(t)^2\right]}{\epsilon^2}", der.expected_mode_gram_series,
                 "expected_mode_gram_series", suffix=" + O(t^{4})"))
    add("so early on the off-diagonal embedding similarity is proportional to $M^T M$, the inner products of the centred, "
        "weighted input signatures.")
    add("")
    add(f"*Note (this project's derivation vs. PAPER section 4):* the coefficient of $t^2$ is "
        f"${latex(t2_coeff)}$, i.e. {latex(t2_ratio)} times $\\sigma^2$, so "
        f"$\\mathbb{{E}}[A A^T] \\approx \\epsilon^2 d\\,(I + {latex(t2_ratio)}\\,t^2 M^T M)$. PAPER "
        "section 4 writes $\\epsilon^2 d\\,(I + t^2 M^T M)$, which is what the first-order "
        "truncation $A \\approx A_0 + t M^T B_0$ gives; it misses the $t^2$ term of "
        "$\\cosh(\\sigma t)$ acting on $A_0$, which contributes as much as the $\\sinh$ term. The "
        "direction ($M^T M$), and so the predicted similarity structure, is the same.")
    add("")
    add("The logit map $U E = B A^T$ has, in the leading mode, the value $b(t) \\cdot a(t)$ (summed "
        "over the $d$ width coordinates); its expectation is the growth amplitude")
    add("")
    add(display(r"\mathbb{E}\left[a(t) \cdot b(t)\right]", der.expected_product_amplitude,
                 "expected_product_amplitude"))
    add("Each mode of the weights grows like $e^{\\sigma t}$ and the amplitude like "
        "$e^{2\\sigma t}$, after a plateau. The escape time $t^*$ is when the "
        "amplitude of the leading mode ($\\sigma = \\sigma_1$) reaches a threshold $\\theta$:")
    add("")
    add(display("t^*", der.escape_time, "escape_time"))
    add(display("t^*", escape_log))
    add(f"As $\\epsilon \\to 0$, $\\sigma t^* / \\log(1/\\epsilon) \\to {latex(escape_ratio)}$ (the "
        f"paper's $t^* \\sim \\log(1/\\epsilon)/\\sigma_1$), and more precisely "
        f"$t^* - {latex(escape_leading)} \\to {latex(escape_rest)}$ (limits computed by sympy). "
        "After the escape the linearisation stops applying; the exact flow of section 4 has to be "
        "integrated numerically.")
    add("")

    add("## 8. Next-order softmax correction")
    add("")
    add("Keeping the second-order term of the softmax expansion (same notation as section 5, "
        "$\\overline{w^2}$ the mean of $w_k^2$ over the $V$ labels), up to third order in $z$:")
    add("")
    add(display(r"\mathrm{softmax}(z)_j", der.softmax_second_order, "softmax_second_order"))
    add("The first-order term already changes the gradient matrix: $G = M - \\mathbb{E}[(p - "
        "u\\mathbf{1})\\,c^T]$ with $p - u\\mathbf{1} \\approx u(I - u\\mathbf{1}\\mathbf{1}^T)\\,z$ "
        "and $z = U E c$, so")
    add("")
    add(display("G", der.next_order_gradient_matrix, "next_order_gradient_matrix"))
    add("$\\Sigma_c = \\mathbb{E}[c\\,c^T]$ is where the co-occurrence signature enters: its column "
        "$s$ is $\\mathbb{E}[c_s\\,c]$, i.e. $f_s$ times the expected counts of all features given "
        "that $s$ occurs (when it occurs at most once ; PAPER section 3, "
        "the paper's $\\phi_x^X$, our $K$). `probsig_jax.theory.linear.integrate_flow("
        "order=\"next_order\")` integrates the flow with this $G$.")
    add("")

    out += _check_section(der, checks)
    return "\n".join(out).rstrip("\n") + "\n"


def _build_linear(skip_verify: bool) -> tuple[D.LinearFlowDerivation, dict]:
    der = D.derive_linear_flow()
    return der, dict(der.checks) if skip_verify else dict(D.verify_linear_flow())


LINEAR_DOCUMENT = WriteupDocument(
    prog="derive_linear_flow.py",
    description="Derive the linear model's gradient flow with sympy, verify it, and write the Markdown "
                "write-up (PAPER section 4).",
    default_out=DEFAULT_OUT, generator_command=GENERATOR_COMMAND, verify_cost="about 10-15 s",
    build=_build_linear, render=lambda der, checks: render_linear_flow_markdown(der, checks))


def main(argv: Sequence[str] | None = None, *, default_out: Path | None = None) -> int:
    """Command line of ``theory/derive_linear_flow.py``; returns the exit status (0 ok, 1 failure)."""
    return document_main(LINEAR_DOCUMENT, argv, default_out=default_out)
