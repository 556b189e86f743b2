"""Issue 22, items 3 and 4: the iterator keeps its promises. StopIteration stays raised until a new iter();
threads sharing a loader take turns; an interrupted next() loses no batch; state_dict() is a position of the
batches handed out, whoever asks and whenever; load_state_dict() is all or nothing."""

import signal
import threading

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup.loader import create_dali_loader

CFG = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
KW = dict(batch_size=4, num_classes=3, image_size=16, num_threads=1, device="cpu", mixup=CFG, seed=6)


def _clone(batch):
    return tuple(t.clone() for t in batch)


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


def _stream(data, epochs=2):
    """The uninterrupted stream: every batch of ``epochs`` epochs."""
    loader = create_dali_loader(data, **KW)
    return [[_clone(b) for b in loader] for _ in range(epochs)]


class _AfterDali:
    """Wraps the loader's DALI iterator: at the ``when``-th batch, once DALI has handed it over, calls ``hook``
    (a signal sent to this process, another thread's call...) before the loader has used it."""

    def __init__(self, loader, when, hook):
        self.inner, self.when, self.hook, self.count = loader._iter, when, hook, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __next__(self):
        out = next(self.inner)
        self.count += 1
        if self.count == self.when:
            self.hook()
            for _ in range(100):  # bytecodes for a pending signal's handler to run in, as after DALI's wait
                pass
        return out


def test_stop_iteration_stays_raised_until_a_new_iter(image_folder):
    expected = _stream(image_folder)
    loader = create_dali_loader(image_folder, **KW)
    it = iter(loader)
    first = [_clone(b) for b in it]
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(it)
    assert loader.epoch == 1 and loader.step == 0
    second = [_clone(b) for b in iter(loader)]  # the next epoch, whole
    assert _same(first, expected[0]) and _same(second, expected[1])


def test_two_threads_sharing_an_iterator_take_turns(image_folder):
    expected = _stream(image_folder)
    loader = create_dali_loader(image_folder, **KW)
    it = iter(loader)
    got, errors = [], []

    def consume():
        try:
            for batch in it:
                got.append(_clone(batch))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == len(loader) and loader.epoch == 1  # one epoch, no stray batch, no epoch skipped
    # each batch is one of the epoch's, none twice (which thread got which is the scheduler's choice)
    found = sorted(next(i for i, e in enumerate(expected[0]) if _same([b], [e])) for b in got)
    assert found == list(range(len(loader)))


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, whatever the process inherited: a process
    started in the background by a shell without job control starts with SIGINT ignored, and Python then keeps it
    ignored (the test then saw no KeyboardInterrupt)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_keyboard_interrupt_after_dalis_wait_loses_no_batch(image_folder, ctrl_c):
    expected = _stream(image_folder)
    loader = create_dali_loader(image_folder, **KW)
    it = iter(loader)
    got = [_clone(next(it)), _clone(next(it))]
    loader._iter = _AfterDali(loader, 1, lambda: signal.raise_signal(signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert loader.step == 2
    got += [_clone(b) for b in it]  # continuing: the batch that was being made, then the rest
    got2 = [_clone(b) for b in loader]
    assert _same(got, expected[0]) and _same(got2, expected[1])


def test_state_dict_from_a_signal_handler_during_next_is_the_position_handed_out(image_folder):
    expected = _stream(image_folder)
    loader = create_dali_loader(image_folder, **KW)
    it = iter(loader)
    next(it), next(it)
    saved = []
    old = signal.signal(signal.SIGUSR1, lambda *_: saved.append(loader.state_dict()))
    try:
        loader._iter = _AfterDali(loader, 1, lambda: signal.raise_signal(signal.SIGUSR1))
        third = _clone(next(it))
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert len(saved) == 1 and saved[0]["step"] == 2  # the handler ran inside next(), before batch 2 was out
    assert _same([third], expected[0][2:3])
    resumed = create_dali_loader(image_folder, **KW)
    resumed.load_state_dict(saved[0])
    assert _same([_clone(b) for b in resumed], expected[0][2:])


def test_state_dict_from_another_thread_during_next_is_consistent(image_folder):
    expected = _stream(image_folder)
    loader = create_dali_loader(image_folder, **KW)
    it = iter(loader)
    next(it)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("state", loader.state_dict()))

    def ask_meanwhile():  # the other thread asks while this next() holds DALI's batch
        thread.start()
        thread.join(0.5)

    loader._iter = _AfterDali(loader, 1, ask_meanwhile)
    second = _clone(next(it))
    thread.join()
    state = box["state"]
    assert _same([second], expected[0][1:2])
    resumed = create_dali_loader(image_folder, **KW)
    resumed.load_state_dict(state)
    # the state is the position either before or after the batch in hand, and resumes exactly from there
    step = state["step"]
    assert step in (1, 2)
    assert _same([_clone(b) for b in resumed], expected[0][step:])


def _broken(state, how):
    state = dict(state)
    if how == "dali bytes":
        state["dali"] = state["dali"][: len(state["dali"]) // 2]
    elif how == "dali type":
        state["dali"] = 12345
    elif how == "step":
        state["step"] = "two"
    elif how == "in_epoch":
        state["in_epoch"] = "yes"
    elif how == "identity":
        state["identity"] = ["not", "a", "dict"]
    return state


@pytest.mark.parametrize("how", ["dali bytes", "dali type", "step", "in_epoch", "identity"])
def test_failed_load_state_dict_leaves_the_loader_as_it_was(image_folder, how):
    expected = _stream(image_folder)
    donor = create_dali_loader(image_folder, **KW)
    donor.set_epoch(1)
    donor_it = iter(donor)
    next(donor_it)
    donor.mixup_enabled = False
    damaged = _broken(donor.state_dict(), how)
    loader = create_dali_loader(image_folder, **KW)
    it = iter(loader)
    got = [_clone(next(it)), _clone(next(it))]
    with pytest.raises((ValueError, TypeError), match="state_dict"):
        loader.load_state_dict(damaged)
    assert (loader.epoch, loader.step, loader.mixup_enabled) == (0, 2, True)
    got += [_clone(b) for b in it]
    assert _same(got, expected[0])
    assert _same([_clone(b) for b in loader], expected[1])  # and the next epoch, fresh, mixes as it should


def test_set_epoch_takes_numpy_integers(image_folder):
    loader = create_dali_loader(image_folder, **KW)
    loader.set_epoch(np.int64(1))
    assert loader.epoch == 1 and type(loader.epoch) is int
    loader.sampler.set_epoch(np.uint8(2))
    assert loader.epoch == 2
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        loader.set_epoch(np.int64(-1))
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        loader.set_epoch(1.0)
