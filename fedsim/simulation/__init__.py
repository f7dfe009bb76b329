"""The simulation loop and cohort sampling."""
from fedsim.simulation.loop import SimulationResult, evaluate_population, simulate
from fedsim.simulation.sampling import PoissonSampler, SamplingError, UniformSampler

__all__ = ["PoissonSampler", "SamplingError", "SimulationResult", "UniformSampler", "evaluate_population", "simulate"]
