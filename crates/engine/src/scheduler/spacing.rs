//! Inference timesteps from `timestep_spacing`, reproducing numpy's arithmetic
//! (linspace, float arange, round-half-to-even) so that every step count gives
//! diffusers' exact integers.

use super::settings::Spacing;

/// Timesteps of DDIM, PNDM and Euler, in the order they are visited (descending).
/// `round_linspace`: DDIM and PNDM round `linspace` points to integers; Euler keeps
/// them fractional.
pub(crate) fn descending_timesteps(
    spacing: Spacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: i64,
    round_linspace: bool,
) -> Vec<f64> {
    let (train, steps) = (num_train_timesteps, num_inference_steps);
    match spacing {
        Spacing::Leading => {
            let ratio = train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio) as f64 + steps_offset as f64)
                .collect()
        }
        Spacing::Linspace => linspace(0.0, (train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| {
                if round_linspace {
                    t.round_ties_even()
                } else {
                    t
                }
            })
            .collect(),
        Spacing::Trailing => trailing(train as f64, train, steps),
    }
}

/// Timesteps of DPMSolverMultistep, which spaces `n + 1` points and drops the last,
/// over `0..last_timestep` (shortened by `lambda_min_clipped`).
pub(crate) fn dpm_solver_timesteps(
    spacing: Spacing,
    num_train_timesteps: usize,
    last_timestep: usize,
    num_inference_steps: usize,
    steps_offset: i64,
) -> Vec<f64> {
    let steps = num_inference_steps;
    match spacing {
        Spacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio) as f64 + steps_offset as f64)
                .collect()
        }
        Spacing::Linspace => linspace(0.0, last_timestep as f64 - 1.0, steps + 1)
            .into_iter()
            .skip(1)
            .rev()
            .map(f64::round_ties_even)
            .collect(),
        Spacing::Trailing => trailing(last_timestep as f64, num_train_timesteps, steps),
    }
}

/// `round(arange(start, 0, -train/steps)) - 1`: counts back from the end of training.
fn trailing(start: f64, train: usize, steps: usize) -> Vec<f64> {
    let ratio = train as f64 / steps as f64;
    arange(start, 0.0, -ratio)
        .into_iter()
        .map(|t| t.round_ties_even() - 1.0)
        .collect()
}

/// numpy.linspace with the endpoint: `start + i·step`, the last point set to `stop`.
pub(crate) fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut points: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    points[num - 1] = stop;
    points
}

/// numpy.arange for floats: `ceil((stop − start) / step)` points, filled as numpy
/// does, from the difference of its first two (which may differ from `step` in the
/// last bit and decides some round-half cases).
fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_default_spacings_for_ten_steps() {
        // diffusers 0.42, 1000 training steps, steps_offset 1.
        assert_eq!(
            descending_timesteps(Spacing::Leading, 1000, 10, 1, true),
            [901., 801., 701., 601., 501., 401., 301., 201., 101., 1.]
        );
        assert_eq!(
            descending_timesteps(Spacing::Trailing, 1000, 10, 1, true),
            [999., 899., 799., 699., 599., 499., 399., 299., 199., 99.]
        );
        assert_eq!(
            dpm_solver_timesteps(Spacing::Linspace, 1000, 1000, 10, 1),
            [999., 899., 799., 699., 599., 500., 400., 300., 200., 100.]
        );
    }

    #[test]
    fn trailing_keeps_numpys_extra_point() {
        // numpy's arange yields 62 points for 61 steps; the last rounds to -1, which
        // the schedulers then refuse.
        let t = descending_timesteps(Spacing::Trailing, 1000, 61, 0, true);
        assert_eq!(t.len(), 62);
        assert_eq!(*t.last().unwrap(), -1.0);
    }
}
