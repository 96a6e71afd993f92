//! `facegate cameras`: the V4L2 cameras this machine offers.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

pub fn cameras(args: &crate::cli::JsonArg) -> Result<ExitCode> {
    let list = facegate_capture::list_cameras()?;
    if args.json {
        let v: Vec<_> = list
            .iter()
            .map(|c| json!({ "index": c.index, "name": c.name, "path": c.path }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if list.is_empty() {
        println!("no V4L2 camera found");
    } else {
        for c in &list {
            println!("camera:{}  {}  {}", c.index, c.path.display(), c.name);
        }
    }
    Ok(if list.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
