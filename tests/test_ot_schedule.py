"""The fit's stopping schedule and final-evaluation budget (ae_ot.ot.schedule), rule by rule, and
the solver split into problem, settings, state and solution."""

import math

import pytest
import torch

from ae_ot.checks import UserInputError
from ae_ot.ot import FitSettings, NewtonOptions, SemiDiscreteOT, SemiDiscreteProblem, SemiDiscreteSolution
from ae_ot.ot.fitting import solve
from ae_ot.ot.methods import NewtonState
from ae_ot.ot.schedule import (
    EVAL_FRACTION,
    EVAL_FRACTION_MAX,
    EVAL_RATE_MARGIN,
    FIRST_CHECK_STEP,
    FinalEvaluationBudget,
    StoppingSchedule,
    samples_for_floor,
)


def test_a_check_screens_only_where_a_screen_costs_under_half_the_precise_evaluation():
    precise = max(samples_for_floor(0.02, 2000), 1 << 20)
    schedule = StoppingSchedule(0.02, precise, 2000)
    assert schedule.levels == [(samples_for_floor(0.04, 2000), 1.15)]   # the floor-2-tol screen only
    assert schedule.first_stage_samples == samples_for_floor(0.04, 2000) < precise / 2
    assert StoppingSchedule(0.02, 1 << 19, 2000).levels == []            # a cheap precise evaluation: no screen
    exact = StoppingSchedule(0.02, precise, 2000, exact=True)
    assert exact.levels == [] and exact.first_stage_samples == precise
    assert schedule.screen_passes(1.15 * 0.02, 1.15) and not schedule.screen_passes(1.16 * 0.02, 1.15)
    with pytest.raises(UserInputError, match="tol must be positive"):
        StoppingSchedule(0.0, precise, 2000)


def test_the_first_check_waits_for_its_step_and_for_a_quarter_of_its_samples():
    schedule = StoppingSchedule(0.02, 1 << 22, 2000)
    first = schedule.first_stage_samples
    enough = math.ceil(first / EVAL_FRACTION)
    assert not schedule.next_due(FIRST_CHECK_STEP - 1, 100.0, 10 * enough, evaluated_before=False)
    assert not schedule.next_due(FIRST_CHECK_STEP, 100.0, enough - 1, evaluated_before=False)
    assert schedule.next_due(FIRST_CHECK_STEP, 100.0, enough, evaluated_before=False)
    assert schedule.next_due(FIRST_CHECK_STEP, 0.0, 0, evaluated_before=True)      # a resumed run
    assert StoppingSchedule(0.02, 1 << 22, 2000, exact=True).next_due(FIRST_CHECK_STEP, 0.0, 0, False)


def test_the_next_check_keeps_evaluations_under_their_share_or_comes_at_the_predicted_time():
    schedule = StoppingSchedule(0.02, 1 << 22, 2000)
    first = schedule.first_stage_samples
    # Below tol (or stopped): the evaluations so far plus the next check's first stage (this check's
    # seconds per sample x its samples: 2 s for twice its samples -> 1 s) stay under EVAL_FRACTION.
    assert schedule.record(10.0, 4.0, 2.0, 2 * first, 0.01, stopped=False) == pytest.approx((4.0 + 1.0) / EVAL_FRACTION)
    assert schedule.next_time == pytest.approx(20.0)
    assert not schedule.next_due(50, 19.9, 1 << 30, True) and schedule.next_due(50, 20.0, 1 << 30, True)
    assert schedule.record(30.0, 4.0, 2.0, 2 * first, 0.01, stopped=False) == 30.0   # never before now
    # Just above tol: the error's decay predicts tol sooner (after a 10% drop), within EVAL_FRACTION_MAX.
    p = 2.5
    assert schedule.record(10.0, 4.0, 2.0, 2 * first, 0.021, stopped=False) == pytest.approx(10.0 * 1.1 ** p)
    # ... but never past EVAL_FRACTION_MAX of the solver time,
    assert schedule.record(10.0, 8.0, 2.0, 2 * first, 0.021, stopped=False) == pytest.approx(9.0 / EVAL_FRACTION_MAX)
    # ... nor later than the budget alone allows, when the prediction is far.
    assert schedule.record(10.0, 4.0, 2.0, 2 * first, 0.2, stopped=False) == pytest.approx(20.0)
    # Exact areas: every check costs the same.
    exact = StoppingSchedule(0.02, 1 << 22, 2000, exact=True)
    assert exact.record(10.0, 4.0, 2.0, None, 0.01, stopped=False) == pytest.approx(6.0 / EVAL_FRACTION)


def test_the_final_evaluation_budget_reserves_its_predicted_cost_after_the_solves_share():
    budget = FinalEvaluationBudget(time_limit=10.0, eval_samples=1000, eval_share=0.4)
    budget.record_step(2.0, 1000, top_k=2)      # top-2 steps never time the evaluation ...
    assert budget.top1_samples == 0
    assert budget.seconds_per_sample(2.0, 1000) == pytest.approx(2e-3)   # ... unless nothing else does
    budget.record_step(1.0, 1000, top_k=1)
    assert budget.seconds_per_sample(3.0, 2000) == pytest.approx(EVAL_RATE_MARGIN * 1e-3)
    assert budget.seconds(5.9, 2000) == 0.0                             # the solve's 60% comes first
    assert budget.seconds(6.0, 2000) == pytest.approx(1000 * EVAL_RATE_MARGIN * 1e-3)
    assert not budget.stop(8.7, 2000) and budget.stop(8.85, 2000)
    unreserved = FinalEvaluationBudget(time_limit=10.0, eval_samples=1000, eval_share=0.4, reserve=False)
    unreserved.record_step(1.0, 1000, top_k=1)
    assert unreserved.seconds(9.0, 1000) == 0.0 and not unreserved.stop(9.9, 1000) and unreserved.stop(10.0, 1000)
    assert not FinalEvaluationBudget(None, 1000, 0.5).stop(1e9, 1)


def test_the_solver_is_problem_settings_state_and_solution():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(300, 8, generator=g, dtype=torch.float64).clamp(-1, 1)
    problem = SemiDiscreteProblem(y, low=-1.0, high=1.0, backend="torch")
    start = SemiDiscreteSolution(problem, problem.warm_start(3))
    settings = FitSettings(max_steps=12, batch_size=4096)
    solution = solve(problem, start, "default", settings, NewtonOptions(), seed=3, progress=False)
    assert solution.report.steps == 12 and solution.fit_state["step"] == 12
    assert NewtonState.from_dict(solution.fit_state).step == 12
    assert torch.equal(start.unit_heights, problem.warm_start(3))           # the start is not changed
    # The facade is the same computation; these numbers were computed before the split (same seeds).
    ot = SemiDiscreteOT(y, low=-1.0, high=1.0, backend="torch", seed=3)
    report = ot.fit(settings, method="default", progress=False)
    assert torch.equal(ot.heights, solution.heights) and report.samples == 12 * 4096
    expected = [-0.6923915678168486, -0.33951230622074047, 0.4598977627830178, -0.3455187474212991]
    assert torch.allclose(ot.heights[:4], torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    assert float(ot.heights.norm()) == pytest.approx(6.601510920732868, abs=1e-5)
    with pytest.raises(UserInputError, match="max_steps must be >= 1"):
        FitSettings(max_steps=0)
    with pytest.raises(AttributeError):
        settings.tol = 0.1  # frozen
