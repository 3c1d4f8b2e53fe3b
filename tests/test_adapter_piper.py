"""The Piper adapter's audio is a function of the voice and the text, not of the machine."""

import numpy as np

from evalkit.adapters import piper as piper_mod
from evalkit.types import SynthesisRequest

SENTENCES = ["How much wood would a woodchuck chuck?", "The meeting starts at 10:45, not 11.",
             "She sells sea shells by the sea shore.", "I can't believe it's already December!",
             "Please call Stella and ask her to bring these things with her from the store."]


def _samples(adapter, text):
    """What the adapter's synthesize does, on whatever session its voice holds now."""
    return np.concatenate([c.audio_float_array for c in adapter.voice.synthesize(text, syn_config=adapter.syn_config)])


def test_session_threads_are_fixed_not_the_machines(piper):
    """ONNX Runtime's default is a thread per physical core, and the thread count changes Piper's
    samples: the adapter's audio must equal a session pinned to THREADS, on any machine. (That the
    count matters at all is shown by other counts, here measured rather than assumed.)"""
    import onnxruntime

    def session(threads):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        return onnxruntime.InferenceSession(str(piper.path), sess_options=options,
                                            providers=["CPUExecutionProvider"])

    ours = [piper.synthesize([SynthesisRequest(f"u{i}", t, "en")])[0].samples for i, t in enumerate(SENTENCES)]
    original = piper.voice.session
    try:
        by_threads = {}
        for threads in (piper_mod.THREADS, 1, 4):
            piper.voice.session = session(threads)
            by_threads[threads] = [_samples(piper, t).astype(np.float32) for t in SENTENCES]
    finally:
        piper.voice.session = original
    for a, b in zip(ours, by_threads[piper_mod.THREADS], strict=True):
        np.testing.assert_array_equal(a, b)
    assert piper.voice.session.get_session_options().intra_op_num_threads == piper_mod.THREADS
    changed = sum(not np.array_equal(a, b) for n in (1, 4)
                  for a, b in zip(ours, by_threads[n], strict=True))
    print(f"clips that another thread count changes: {changed} of {2 * len(SENTENCES)}")
