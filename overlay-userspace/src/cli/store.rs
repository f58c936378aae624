use super::{ExportFormat, Global, StoreCmd};
use overlay_bpf::{
    error::{Error, Result},
    state::model::{self},
    state::store::summary,
};

pub async fn store(g: &Global, cmd: StoreCmd) -> Result<i32> {
    let mut store = super::open_store(g).await?;
    match cmd {
        StoreCmd::Import { file, replace } => {
            let state = model::read_state(&file)?;
            store.import(&state, replace).await?;
            println!("{}: imported {} ({})", store.describe(), file.display(), summary(&state));
        }
        StoreCmd::Export { output } => {
            let state = store.read().await?;
            let cluster = model::resolve(&store.describe(), &state, overlay_bpf::host::capabilities())?;
            let state = model::pinned(&state, &cluster);
            let text = match output {
                ExportFormat::Yaml => {
                    serde_yaml::to_string(&state).map_err(|e| Error::io("print YAML")(std::io::Error::other(e)))?
                }
                ExportFormat::Json => super::status::json(&state)? + "\n",
            };
            print!("{text}");
        }
    }
    Ok(0)
}
