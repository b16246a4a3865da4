"""MatryoshkaLoss and the inner losses it applies to every embedding prefix."""

from mrl.losses.classification import NestedLinearHeads, TiedLinearHead
from mrl.losses.contrastive import InfoNCE
from mrl.losses.matryoshka import MatryoshkaLoss, build_loss
from mrl.losses.pairs import PairInfoNCE
from mrl.losses.similarity import SimilarityPreserving, SimilarityTarget

__all__ = ["InfoNCE", "MatryoshkaLoss", "NestedLinearHeads", "PairInfoNCE", "SimilarityPreserving", "SimilarityTarget",
           "TiedLinearHead", "build_loss"]
