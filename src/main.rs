//! The `geopath` command line.

use clap::{Parser, Subcommand};
use geopath::bench::{self, BenchResult};
use geopath::{Device, DeviceChoice};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "geopath",
    version,
    about = "Weight-space geodesics for neural networks on a WGSL tensor engine"
)]
struct Cli {
    /// Compute device: auto prefers a hardware GPU, accepts a software Vulkan driver, else the CPU reference.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto, global = true)]
    device: DeviceChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the adapter: name, backend, device type, driver, limits, features.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure kernel and autodiff throughput (all benchmarks when no NAME is given).
    Bench {
        /// Benchmarks to run: matmul, matmul-512, matmul-256, mlp-forward, mlp-jvp, mlp-grad, mlp-hvp, mlp-gn.
        names: Vec<String>,
        /// Print one JSON object {"adapter": {...}, "results": [...]}.
        #[arg(long)]
        json: bool,
    },
}

/// Escapes a string for JSON.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The adapter description as a JSON object.
fn adapter_json(device: &Device) -> String {
    match device {
        Device::Cpu => "{\"name\": \"cpu-reference\", \"backend\": \"none\", \"device_type\": \"Cpu\", \"driver\": \"\", \"driver_info\": \"\"}".into(),
        Device::Gpu(ctx) => {
            let i = &ctx.info;
            let l = &ctx.limits;
            let features: Vec<String> = ctx.adapter.features().iter_names().map(|(n, _)| json_str(n)).collect();
            format!(
                "{{\"name\": {}, \"backend\": {}, \"device_type\": {}, \"driver\": {}, \"driver_info\": {}, \"limits\": {{\"max_storage_buffer_binding_size\": {}, \"max_buffer_size\": {}, \"max_compute_workgroup_storage_size\": {}, \"max_compute_invocations_per_workgroup\": {}, \"max_compute_workgroups_per_dimension\": {}, \"max_storage_buffers_per_shader_stage\": {}}}, \"features\": [{}]}}",
                json_str(&i.name),
                json_str(&format!("{:?}", i.backend)),
                json_str(&format!("{:?}", i.device_type)),
                json_str(&i.driver),
                json_str(&i.driver_info),
                l.max_storage_buffer_binding_size,
                l.max_buffer_size,
                l.max_compute_workgroup_storage_size,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroups_per_dimension,
                l.max_storage_buffers_per_shader_stage,
                features.join(", ")
            )
        }
    }
}

fn print_info(device: &Device, json: bool) {
    if json {
        println!("{}", adapter_json(device));
        return;
    }
    match device {
        Device::Cpu => println!("device: CPU reference (no wgpu adapter in use)"),
        Device::Gpu(ctx) => {
            let i = &ctx.info;
            let l = &ctx.limits;
            println!("adapter:      {}", i.name);
            println!("backend:      {:?}", i.backend);
            println!(
                "device type:  {:?} ({:?} kernel variants)",
                i.device_type, ctx.class
            );
            println!("driver:       {} {}", i.driver, i.driver_info);
            println!("limits:       storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, {} invocations/workgroup, {} workgroups/dim, {} storage buffers/stage",
                l.max_storage_buffer_binding_size >> 20, l.max_buffer_size >> 20, l.max_compute_workgroup_storage_size >> 10,
                l.max_compute_invocations_per_workgroup, l.max_compute_workgroups_per_dimension, l.max_storage_buffers_per_shader_stage);
            let f: Vec<&str> = ctx
                .adapter
                .features()
                .iter_names()
                .map(|(n, _)| n)
                .collect();
            println!("features:     {}", f.join(" "));
        }
    }
}

fn print_bench(device: &Device, results: &[BenchResult], json: bool) {
    if json {
        let rows: Vec<String> = results
            .iter()
            .map(|r| {
                format!(
                    "{{\"name\": {}, \"shape\": {}, \"ms\": {:.4}, \"gflops\": {}}}",
                    json_str(&r.name),
                    json_str(&r.shape),
                    r.ms,
                    r.gflops.map_or("null".into(), |g| format!("{g:.3}"))
                )
            })
            .collect();
        println!(
            "{{\"adapter\": {}, \"results\": [{}]}}",
            adapter_json(device),
            rows.join(", ")
        );
        return;
    }
    println!("device: {}", device.name());
    println!(
        "{:<14} {:<28} {:>10} {:>10}",
        "name", "shape", "ms", "GFLOP/s"
    );
    for r in results {
        println!(
            "{:<14} {:<28} {:>10.3} {:>10}",
            r.name,
            r.shape,
            r.ms,
            r.gflops.map_or("-".into(), |g| format!("{g:.2}"))
        );
    }
}

fn run(cli: Cli) -> geopath::Result<()> {
    let device = Device::open(cli.device)?;
    match cli.command {
        Command::Info { json } => print_info(&device, json),
        Command::Bench { names, json } => {
            let results = bench::run(&device, &names)?;
            print_bench(&device, &results, json);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
