//! How `geopath bench` prints its results: a table, or one JSON object whose fields extend,
//! never change, those of earlier versions (`gpu_timestamps` and each result's `gpu_ms` were
//! added beside the wall-time `ms`).

use super::BenchResult;
use crate::device::Device;
use crate::train::json_str;

/// What the GPU-time column holds on `device`, in words.
pub fn gpu_time_note(device: &Device) -> &'static str {
    match device.gpu() {
        Some(ctx) if ctx.has_timestamps() => "GPU ms: timestamps around each submitted compute pass, summed per run",
        Some(_) => "GPU ms: not measured, the adapter has no TIMESTAMP_QUERY",
        None => "GPU ms: not measured off a wgpu device",
    }
}

/// The results as a table on `device`, a note on GPU time last.
pub fn table(device: &Device, results: &[BenchResult]) -> String {
    let mut out = format!("device: {}\n", device.name());
    out += &format!("{:<14} {:<28} {:>10} {:>10} {:>10}\n", "name", "shape", "ms", "GPU ms", "GFLOP/s");
    for r in results {
        out += &format!(
            "{:<14} {:<28} {:>10.3} {:>10} {:>10}\n",
            r.name,
            r.shape,
            r.ms,
            r.gpu_ms.map_or("-".into(), |g| format!("{g:.3}")),
            r.gflops.map_or("-".into(), |g| format!("{g:.2}"))
        );
    }
    out + gpu_time_note(device) + "\n"
}

/// The results as one JSON object `{"adapter": adapter, "gpu_timestamps": bool, "results":
/// [{"name", "shape", "ms", "gflops", "gpu_ms"}]}`, `adapter` being the adapter's JSON.
pub fn json(adapter: &str, device: &Device, results: &[BenchResult]) -> String {
    let rows: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"name\": {}, \"shape\": {}, \"ms\": {:.4}, \"gflops\": {}, \"gpu_ms\": {}}}",
                json_str(&r.name),
                json_str(&r.shape),
                r.ms,
                r.gflops.map_or("null".into(), |g| format!("{g:.3}")),
                r.gpu_ms.map_or("null".into(), |g| format!("{g:.4}"))
            )
        })
        .collect();
    let timestamps = device.gpu().is_some_and(|c| c.has_timestamps());
    format!("{{\"adapter\": {adapter}, \"gpu_timestamps\": {timestamps}, \"results\": [{}]}}", rows.join(", "))
}
