"""The tiny text-to-waveform model: its own module so that importing the adapter (which evalkit
does for every run, to ask it `claims`) does not import torch."""

import math

import torch
from torch import nn


class TinyTTSModel(nn.Module):
    """Each character is embedded and projected to a pitch, a loudness and a duration; the frames
    are rendered as a three-harmonic buzz plus a little breath noise from the global RNG."""

    sample_rate: int
    hop: int
    vocab: int
    breath: float

    def __init__(self, dim: int = 16, sample_rate: int = 16000, hop: int = 160, vocab: int = 256,
                 breath: float = 0.02) -> None:
        super().__init__()
        self.sample_rate, self.hop, self.vocab, self.breath = sample_rate, hop, vocab, breath
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, 3)  # per character: pitch, loudness, duration

    def forward(self, text: str) -> torch.Tensor:
        device = self.embed.weight.device
        codes = [ord(c) % self.vocab for c in text]
        if len(codes) == 0:
            return torch.zeros(0, device=device)
        ids = torch.tensor(codes, dtype=torch.long, device=device)
        p = torch.sigmoid(self.proj(self.embed(ids)))
        f0 = 90.0 + 160.0 * p[:, 0]
        voiced = (ids != 32) & (ids != 46) & (ids != 44)  # space, '.' and ',' are pauses
        amp = (0.1 + 0.4 * p[:, 1]) * voiced.float()
        samples = (4 + torch.floor(8.0 * p[:, 2]).long()) * self.hop  # 40-120 ms per character
        f0 = torch.repeat_interleave(f0, samples)
        amp = torch.repeat_interleave(amp, samples)
        # float64 phase: accumulated over seconds, float32 would drift audibly.
        phase = torch.cumsum(f0.double() * (2.0 * math.pi / self.sample_rate), 0)
        buzz = (torch.sin(phase) + 0.5 * torch.sin(2.0 * phase) + 0.25 * torch.sin(3.0 * phase)) / 1.75
        wave = amp * buzz.float() + self.breath * amp * torch.randn_like(amp)
        return wave.clamp(-1.0, 1.0)


class WithoutRate(nn.Module):
    """The model behind a module without a `sample_rate` attribute, as many shipped archives are."""

    def __init__(self, inner: TinyTTSModel) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, text: str) -> torch.Tensor:
        return self.inner(text)
