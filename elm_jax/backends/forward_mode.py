"""Forward-mode derivatives for code that has a hand-written backward pass.

JAX cannot push tangents through a `jax.custom_vjp` function (``jax.jvp`` and
``jax.jacfwd`` raise).  The backends with a custom backward (the hoisted memory core,
DEER's implicit gradient) are therefore `jax.custom_jvp` functions whose tangent map is
the *transpose of their backward pass*: the backward is plain JAX code, linear in its
cotangent, so `jax.linear_transpose` turns it into the pushforward.  Reverse mode then
transposes that tangent map back, which reproduces the backward's own loops and
matmuls.  What the backward recomputes must stay in the backward pass, or the forward
pass would save it for every step: a backward whose loop body is checkpointed (the
hoisted core's chunk loop) already does that; otherwise pass ``remat=True`` to
checkpoint the whole tangent map.
`jax.jvp`, `jax.jacfwd`, `jax.grad` and their compositions (Hessian-vector products,
forward over reverse or reverse over reverse) all work.
"""

from __future__ import annotations

from typing import Any, Callable

import jax


def tangent_by_transposed_vjp(bwd: Callable[[Any, Any], Any], residuals: Any,
                              primal_out: Any, tangents: Any, *, remat: bool = False) -> Any:
    """The JVP ``J @ tangents`` of a function whose VJP is ``bwd(residuals, g)``.

    Args:
      bwd: the backward pass, ``bwd(residuals, g) -> cotangents of the inputs`` (a tuple
        shaped like `tangents`), linear in ``g``.
      residuals: what the forward pass saved for `bwd`.
      primal_out: the function's output (shape and dtype of ``g`` and of the result).
      tangents: the input tangents (a tuple, one entry per differentiable input).
      remat: wrap the tangent map in `jax.checkpoint` (see the module docstring).
    Returns: the output tangent, shaped like `primal_out`.
    """
    def pushforward(residuals, tangents):
        def pullback(g):
            return tuple(bwd(residuals, g))

        return jax.linear_transpose(pullback, primal_out)(tuple(tangents))[0]

    if remat:
        pushforward = jax.checkpoint(pushforward)
    return pushforward(residuals, tuple(tangents))
