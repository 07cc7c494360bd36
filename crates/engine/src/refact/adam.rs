//! Adam on one vector, with PyTorch's update rule (betas 0.9/0.999, eps 1e-8, no weight
//! decay: ReFACT's "weight decay" is a term of its loss, not Adam's).

/// State of Adam for a parameter vector.
#[derive(Debug, Clone)]
pub struct Adam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step: i32,
    first: Vec<f32>,
    second: Vec<f32>,
}

impl Adam {
    pub fn new(lr: f64, len: usize) -> Self {
        Self {
            lr: lr as f32,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            first: vec![0.0; len],
            second: vec![0.0; len],
        }
    }

    /// One step: `param -= lr / (1 - β1ᵗ) · m / (√v / √(1 - β2ᵗ) + ε)`.
    pub fn step(&mut self, param: &mut [f32], grad: &[f32]) {
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.step)).sqrt();
        let step_size = self.lr / bias1;
        for i in 0..param.len() {
            self.first[i] = self.beta1 * self.first[i] + (1.0 - self.beta1) * grad[i];
            self.second[i] = self.beta2 * self.second[i] + (1.0 - self.beta2) * grad[i] * grad[i];
            let denom = self.second[i].sqrt() / bias2_sqrt + self.eps;
            param[i] -= step_size * self.first[i] / denom;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_coordinate_by_lr_against_the_gradient_sign() {
        // With bias correction, Adam's first step is lr · g / (|g| + eps).
        let mut adam = Adam::new(0.05, 3);
        let mut p = vec![0.0, 0.0, 1.0];
        adam.step(&mut p, &[2.0, -0.5, 0.0]);
        assert!(
            (p[0] + 0.05).abs() < 1e-6 && (p[1] - 0.05).abs() < 1e-6 && p[2] == 1.0,
            "{p:?}"
        );
    }

    #[test]
    fn minimises_a_quadratic() {
        let mut adam = Adam::new(0.1, 1);
        let mut x = vec![5.0f32];
        for _ in 0..500 {
            let g = vec![2.0 * (x[0] - 2.0)];
            adam.step(&mut x, &g);
        }
        assert!((x[0] - 2.0).abs() < 0.05, "{x:?}");
    }
}
