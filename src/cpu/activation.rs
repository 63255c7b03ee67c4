//! Activations and elementwise ops, in f32, as HF transformers defines them.

use crate::vocab::Activation;

/// The activation's value at x.
#[inline]
pub fn apply(act: Activation, x: f32) -> f32 {
    match act {
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluNew => {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::GeluFast => {
            0.5 * x * (1.0 + (x * 0.797_884_6 * (1.0 + 0.044715 * x * x)).tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Relu => x.max(0.0),
    }
}

/// `x = act(x)` in place.
pub fn activate(act: Activation, x: &mut [f32]) {
    for v in x {
        *v = apply(act, *v);
    }
}

/// Gated activation: `out = act(gate) · up` (SiLU for Cohere's gated MLP).
pub fn act_mul(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = apply(act, g) * u;
    }
}

/// `x += y`.
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_by_hand() {
        // gelu(1) = 0.5·(1 + erf(0.70710678)) = 0.5·1.6826895 = 0.8413447
        assert!((apply(Activation::GeluErf, 1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((apply(Activation::GeluErf, -1.0) + 0.158_655_3).abs() < 1e-6);
        // gelu_new(1): tanh(0.7978846·1.044715) = tanh(0.8335625) = 0.6823840 → 0.8411920
        assert!((apply(Activation::GeluNew, 1.0) - 0.841_192).abs() < 1e-6);
        // gelu_fast is the same polynomial written differently
        assert!((apply(Activation::GeluFast, 1.0) - 0.841_192).abs() < 1e-6);
        assert!(
            (apply(Activation::GeluFast, -2.5) - apply(Activation::GeluNew, -2.5)).abs() < 1e-6
        );
        // silu(2) = 2 / (1 + e^-2) = 2 / 1.1353353 = 1.7615942
        assert!((apply(Activation::Silu, 2.0) - 1.761_594_2).abs() < 1e-6);
        assert_eq!(apply(Activation::Relu, -3.0), 0.0);
        assert_eq!(Activation::from_hf("gelu"), Some(Activation::GeluErf));
        assert_eq!(Activation::from_hf("quick_gelu"), None);
    }

    #[test]
    fn act_mul_multiplies() {
        let mut out = [0.0; 2];
        act_mul(Activation::Silu, &[2.0, 0.0], &[3.0, 5.0], &mut out);
        assert!((out[0] - 3.0 * 1.761_594_2).abs() < 1e-5);
        assert_eq!(out[1], 0.0);
    }
}
