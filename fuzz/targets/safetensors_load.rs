//! safetensors loading through `Weights`: arbitrary bytes written to a file, mapped, every
//! tensor viewed and decoded.

use super::common;

/// One fuzz input through the code this target covers.
pub fn run(data: &[u8]) {
    let Ok(w) = common::weights_from_bytes("st", data) else {
        return;
    };
    for name in w.names() {
        let v = w.view(name).unwrap();
        let n: usize = v.shape.iter().product();
        assert_eq!(n * v.dtype.size(), v.data.len(), "{name}");
        let t = w.get(name).unwrap();
        assert_eq!(t.numel(), n);
        if t.dtype().is_float() {
            let _ = w.get_float(name, v.shape).unwrap();
            let _ = t.f32_values().unwrap();
        }
        let _ = w.file_of(name);
    }
}
