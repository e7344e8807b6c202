//! `strongroom-bench`: the load generator as a binary of its own (also `strongroom bench`).

fn main() -> anyhow::Result<()> {
    strongroom_bench::main_from(std::env::args_os())
}
