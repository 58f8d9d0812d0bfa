"""The tokenizer's EMA quantizer state: its update formula, and checkpoints written before it
existed restore with it derived from the live quantizer state."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.train import checkpoint as ckpt_lib
from vqjax.train import loop
from vqjax.train.tokenizer import TrainState, ema_quantizer_update


def test_ema_quantizer_update_matches_numpy():
    ema = {"codebook": jnp.zeros((4, 2)), "cluster_size": jnp.ones(4), "initted": jnp.array(False),
           "count": jnp.array(3, jnp.int32)}
    live = {"codebook": jnp.full((4, 2), 2.0), "cluster_size": jnp.full(4, 5.0),
            "initted": jnp.array(True), "count": jnp.array(7, jnp.int32)}
    for step in (0, 5, 10_000):
        d = min(0.999, (1 + step) / (10 + step))  # loop.ema_decay_at's warm-up
        got = ema_quantizer_update(ema, live, 0.999, step)
        np.testing.assert_allclose(np.asarray(got["codebook"]), (1 - d) * 2.0, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(got["cluster_size"]), d + (1 - d) * 5.0, rtol=1e-6)
        assert bool(got["initted"]) and int(got["count"]) == 7  # flags and counters: live
        assert float(loop.ema_decay_at(0.999, step)) == pytest.approx(d)
    # decay 0: the EMA is the live state (as ema_params is a copy of params).
    got = ema_quantizer_update(ema, live, 0.0, 100)
    np.testing.assert_array_equal(np.asarray(got["codebook"]), np.asarray(live["codebook"]))


@flax.struct.dataclass
class OldState:  # a TrainState as checkpoints before ema_quantizer_state hold it
    step: jax.Array
    params: dict
    quantizer_state: dict


@flax.struct.dataclass
class NewState:
    step: jax.Array
    params: dict
    quantizer_state: dict
    ema_quantizer_state: dict = None

    fill_missing = staticmethod(TrainState.fill_missing)


def test_checkpoint_without_ema_quantizer_state_restores(tmp_path):
    qstate = {"codebook": jnp.arange(6.0).reshape(3, 2), "initted": jnp.array(True)}
    old = OldState(step=jnp.array(7), params={"w": jnp.ones(2)}, quantizer_state=qstate)
    checkpointer = ckpt_lib.Checkpointer(tmp_path, async_save=False)
    checkpointer.save(7, old, {"position": 1}, {"seed": 0})
    checkpointer.wait()
    abstract = jax.eval_shape(lambda: NewState(old.step, old.params, qstate, qstate))
    abstract = ckpt_lib.abstract_like(abstract, jax.tree.map(
        lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), abstract))
    state, data, config = checkpointer.restore(7, abstract)
    checkpointer.close()
    assert isinstance(state, NewState) and int(state.step) == 7 and data == {"position": 1}
    np.testing.assert_array_equal(np.asarray(state.ema_quantizer_state["codebook"]),
                                  np.asarray(qstate["codebook"]))
    assert bool(state.ema_quantizer_state["initted"])
    # A copy, not the same buffers: the train step donates the state.
    assert (state.ema_quantizer_state["codebook"].unsafe_buffer_pointer()
            != state.quantizer_state["codebook"].unsafe_buffer_pointer())
