"""Policies decide which model answers which item. They are pure: no I/O, no clients, no threads."""

from smartmix.policies.base import BatchSpec, Certificate, Guarantee, Plan, Policy, ProfileBatch, make_policy
from smartmix.policies.cascade import Cascade, Margin
from smartmix.policies.paper import Paper
from smartmix.policies.reference import ReferenceOnly
from smartmix.policies.router import Router
from smartmix.policies.scorefirst import ScoreFirstCascade
from smartmix.policies.smart import Efficient, Exhaustive, Mix

METHODS = tuple(Policy.registry)

__all__ = [
    "BatchSpec",
    "Cascade",
    "Margin",
    "Certificate",
    "Efficient",
    "Exhaustive",
    "Guarantee",
    "METHODS",
    "Mix",
    "Paper",
    "Plan",
    "Policy",
    "ProfileBatch",
    "ReferenceOnly",
    "Router",
    "ScoreFirstCascade",
    "make_policy",
]
