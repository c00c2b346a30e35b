import textwrap

import pytest

pytest_plugins = ["pytester"]

# A model repository in miniature: a nearest-centre linear classifier on
# well-separated synthetic blobs in [0, 1]^20. Fast to build, exact to reason about.
BLOBS_CONFTEST = textwrap.dedent(
    """
    import pytest
    import torch

    def make_blobs(n=300, d=20, k=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        centres = 0.3 + 0.4 * torch.rand(k, d, generator=g)
        y = torch.arange(n) % k
        x = (centres[y] + 0.03 * torch.randn(n, d, generator=g)).clamp(0, 1)
        return x, y, centres

    class NearestCentre(torch.nn.Module):
        def __init__(self, centres):
            super().__init__()
            self.fc = torch.nn.Linear(centres.shape[1], centres.shape[0])
            with torch.no_grad():
                self.fc.weight.copy_(2 * centres)
                self.fc.bias.copy_(-(centres ** 2).sum(1))

        def forward(self, x):
            return self.fc(x.flatten(1))

    @pytest.fixture(scope="session")
    def robust_data():
        x, y, _ = make_blobs()
        return x, y

    @pytest.fixture(scope="session")
    def robust_model():
        _, _, centres = make_blobs()
        return NearestCentre(centres)
    """
)


@pytest.fixture
def blobs_repo(pytester):
    """A pytester folder whose conftest provides robust_model and robust_data."""
    pytester.makeconftest(BLOBS_CONFTEST)
    return pytester
