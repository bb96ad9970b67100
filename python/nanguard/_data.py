"""Sample ids for the guard: a dataset wrapper whose batches carry them, and a sampler that
leaves out the samples the guard quarantined."""
import collections

import torch

# A sample with its dataset index. DataLoader's default collate keeps named tuples, so a batch
# of IdSamples is one IdSample(sample=<the collated batch>, id=<int64 tensor of indices>), which
# Guard.step recognises: the closure receives batch.sample, the guard the ids.
IdSample = collections.namedtuple("IdSample", ["sample", "id"])


class IdDataset(torch.utils.data.Dataset):
    """The samples of `dataset`, each as IdSample(sample, index)."""

    def __init__(self, dataset):
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise ValueError(
                "nanguard.with_ids: the dataset must have __getitem__ and __len__ (a map-style dataset), got "
                + type(dataset).__name__)
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return IdSample(self.dataset[index], index)


def with_ids(dataset):
    """Wraps a map-style dataset so that its batches carry each sample's index as its id.

    An incident then names the samples it blames by these ids, and a quarantine drops them
    (see QuarantineSampler to leave them out of later epochs)."""
    return IdDataset(dataset)


class QuarantineSampler(torch.utils.data.Sampler):
    """Indices 0..n-1, in a fresh seeded order each epoch, without the guard's quarantined ids.

    Use it with a dataset whose ids are its indices (nanguard.with_ids):

        data = nanguard.with_ids(dataset)
        sampler = nanguard.QuarantineSampler(data, guard)
        loader = torch.utils.data.DataLoader(data, batch_size=32, sampler=sampler)

    Within an epoch the guard drops quarantined samples from the batches already drawn; from the
    next epoch on the sampler does not draw them. The order uses its own generator, seeded by
    seed + epoch, never the global RNG."""

    def __init__(self, data_source, guard=None, shuffle=True, seed=0):
        sized = hasattr(data_source, "__len__") and not isinstance(data_source, (str, bytes))
        if isinstance(data_source, bool) or not (isinstance(data_source, int) or sized):
            raise ValueError("nanguard.QuarantineSampler: data_source must be a sized dataset or a sample count, got "
                             + type(data_source).__name__)
        n = data_source if isinstance(data_source, int) else len(data_source)
        if n < 0:
            raise ValueError("nanguard.QuarantineSampler: the sample count must be >= 0, got %d" % n)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("nanguard.QuarantineSampler: seed must be an int, got " + type(seed).__name__)
        self.num_samples = n
        self.guard = guard
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.epoch = 0

    def _excluded(self):
        if self.guard is None:
            return set()
        return {i for i in self.guard.quarantined if 0 <= i < self.num_samples}

    def __iter__(self):
        excluded = self._excluded()
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = range(self.num_samples)
        self.epoch += 1
        return iter([i for i in order if i not in excluded])

    def __len__(self):
        return self.num_samples - len(self._excluded())
