//! Which GPU devices the GPU backend runs on (config `devices`, flag `--devices`), and the
//! backend over several of them: the atoms cut into contiguous, nearly equal shards
//! ([`even_split`]), one [`GpuBackend`] per device holding only its own shard (same storage),
//! joined by [`ShardedBackend`], which merges the shards' passes and C·g exactly (design §8).
//!
//! Spellings: `best` (the default: one device on the best adapter, `FSLENS_ADAPTER` may pick it
//! by name), `all` (every hardware adapter of the best graphics API, so one GPU listed by Vulkan
//! and GL counts once; the best adapter when there is only a software one), or adapter indices
//! as `fslens info` numbers them, `0,1`. An index may repeat: `0,0` opens two independent
//! devices on adapter 0 (how the tests make two devices on the software adapter, and how one
//! real GPU measures the cost of the split).

use super::gpu::{AdapterInfoRow, GpuBackend, GpuOptions, list_adapters};
use super::shards::{ShardedBackend, even_split};
use super::{Backend, BackendKind};
use crate::{Error, Result};

/// Most devices one list may name.
pub const MAX_DEVICES: usize = 16;

/// The devices of the GPU backend. `Copy` (a fixed-size list) like the other engine choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Devices {
    /// One device on the best adapter (today's behaviour).
    #[default]
    Best,
    /// Every hardware adapter of the best API; the best adapter when none is hardware.
    All,
    /// These adapter indices, in this order (shard k on the k-th).
    List(DeviceList),
}

/// Up to [`MAX_DEVICES`] adapter indices (each below 256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceList {
    len: u8,
    indices: [u8; MAX_DEVICES],
}

impl DeviceList {
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.indices[..self.len as usize]
            .iter()
            .map(|&i| i as usize)
    }
}

const HELP: &str = "expected \"best\" (one device on the best adapter), \"all\" (every hardware \
adapter) or adapter indices as `fslens info` lists them, e.g. \"0,1\" (an index may repeat: \
\"0,0\" is two devices on adapter 0)";

impl Devices {
    /// Parses `text`; errors name `key` (the config key or the flag).
    pub fn parse_for(text: &str, key: &str) -> Result<Devices> {
        match text.trim() {
            "best" => return Ok(Devices::Best),
            "all" => return Ok(Devices::All),
            _ => {}
        }
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        if parts.len() > MAX_DEVICES {
            return Err(Error::config(
                key,
                format!(
                    "lists {} devices; at most {MAX_DEVICES} are supported",
                    parts.len()
                ),
            ));
        }
        let mut list = DeviceList {
            len: 0,
            indices: [0; MAX_DEVICES],
        };
        for p in parts {
            let Ok(i) = p.parse::<u8>() else {
                return Err(Error::config(key, format!("{text:?}: {HELP}")));
            };
            list.indices[list.len as usize] = i;
            list.len += 1;
        }
        Ok(Devices::List(list))
    }

    pub fn is_best(&self) -> bool {
        *self == Devices::Best
    }

    /// The adapters to open, one per device: `None` = the best adapter (honouring
    /// `FSLENS_ADAPTER`), `Some(i)` = index i of `adapters` ([`list_adapters`]). A listed
    /// index that does not exist is an error naming `devices`, the adapters and the fix.
    pub fn resolve(&self, adapters: &[AdapterInfoRow]) -> Result<Vec<Option<usize>>> {
        match self {
            Devices::Best => Ok(vec![None]),
            Devices::All => {
                let hardware: Vec<&AdapterInfoRow> = adapters
                    .iter()
                    .filter(|a| is_hardware(&a.device_type))
                    .collect();
                // One API only: Vulkan (Metal, DX12) lists every GPU GL lists.
                let best_api = hardware.iter().map(|a| api_rank(&a.backend)).min();
                let chosen: Vec<Option<usize>> = hardware
                    .iter()
                    .filter(|a| Some(api_rank(&a.backend)) == best_api)
                    .map(|a| Some(a.index))
                    .collect();
                Ok(if chosen.is_empty() {
                    vec![None]
                } else {
                    chosen
                })
            }
            Devices::List(list) => list
                .indices()
                .map(|i| {
                    if i < adapters.len() {
                        Ok(Some(i))
                    } else {
                        Err(no_such_adapter(i, adapters))
                    }
                })
                .collect(),
        }
    }

    /// Refuses devices with a backend that has none: `--devices` is for the GPU backend.
    pub fn check_backend(&self, kind: BackendKind) -> Result<()> {
        if kind == BackendKind::Cpu && !self.is_best() {
            return Err(Error::config(
                "devices",
                format!(
                    "is {self} but the backend is cpu, which has no devices; drop `devices` \
                     (--devices) or use backend = \"gpu\" (--backend gpu)"
                ),
            ));
        }
        Ok(())
    }

    /// Whether `backend = "auto"` runs on the GPU with these devices: an explicit index list
    /// asks for adapters by name, so the GPU; `best` and `all` as auto decides (hardware
    /// adapter or not).
    pub fn auto_uses_gpu(&self) -> bool {
        matches!(self, Devices::List(_)) || super::auto_uses_gpu()
    }
}

fn is_hardware(device_type: &str) -> bool {
    matches!(device_type, "DiscreteGpu" | "IntegratedGpu" | "VirtualGpu")
}

fn api_rank(backend: &str) -> u8 {
    match backend {
        "Vulkan" | "Metal" | "Dx12" => 0,
        _ => 1,
    }
}

fn no_such_adapter(i: usize, adapters: &[AdapterInfoRow]) -> Error {
    if adapters.is_empty() {
        return Error::config(
            "devices",
            format!(
                "names adapter {i} but no GPU adapter was found (install a Vulkan driver, \
                 e.g. mesa-vulkan-drivers for the software one, or use backend = \"cpu\")"
            ),
        );
    }
    let listed: Vec<String> = adapters
        .iter()
        .map(|a| {
            format!(
                "{} = {} ({}, {})",
                a.index, a.name, a.backend, a.device_type
            )
        })
        .collect();
    Error::config(
        "devices",
        format!(
            "names adapter {i}, which does not exist; the adapters are {}: use indices 0 to \
             {} (`fslens info` lists them), \"all\" or \"best\"",
            listed.join(", "),
            adapters.len() - 1
        ),
    )
}

impl std::fmt::Display for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Devices::Best => f.write_str("best"),
            Devices::All => f.write_str("all"),
            Devices::List(list) => {
                let s: Vec<String> = list.indices().map(|i| i.to_string()).collect();
                f.write_str(&s.join(","))
            }
        }
    }
}

impl std::str::FromStr for Devices {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Devices::parse_for(s, "devices")
    }
}

impl serde::Serialize for Devices {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Devices {
    /// A string (`"all"`, `"0,1"`) or one index as a number (`devices = 1`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Devices;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"best\", \"all\" or adapter indices such as \"0,1\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Devices, E> {
                Devices::parse_for(v, "devices").map_err(|e| E::custom(e.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Devices, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Devices, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One device of a built GPU backend: its adapter and the atoms it holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceShard {
    /// Index of the adapter in [`list_adapters`].
    pub adapter: usize,
    pub name: String,
    /// First atom and one past the last.
    pub atoms: (usize, usize),
}

/// The GPU backend over `devices`: one [`GpuBackend`] when one device is asked for, else one
/// per device over its contiguous shard of the N × `d` `images` (each uploads only its own
/// atoms, with `opts`), joined by [`ShardedBackend`]. Returns the backend and its devices.
pub fn open_gpus(
    images: &[f32],
    d: usize,
    opts: &GpuOptions,
    devices: &Devices,
) -> Result<(Box<dyn Backend>, Vec<DeviceShard>)> {
    let targets = devices.resolve(&list_adapters())?;
    let n = images.len().checked_div(d).unwrap_or(0);
    let offsets = if targets.len() == 1 {
        vec![0, n]
    } else {
        even_split(n, targets.len()).map_err(|e| Error::config("devices", e.to_string()))?
    };
    let mut shards: Vec<Box<dyn Backend>> = Vec::with_capacity(targets.len());
    let mut described = Vec::with_capacity(targets.len());
    for (k, target) in targets.iter().enumerate() {
        let (a, b) = (offsets[k], offsets[k + 1]);
        let gpu = GpuBackend::new(
            &images[a * d..b * d],
            d,
            GpuOptions {
                adapter_index: *target,
                ..opts.clone()
            },
        )?;
        described.push(DeviceShard {
            adapter: gpu.adapter_index(),
            name: gpu.adapter_info().name,
            atoms: (a, b),
        });
        shards.push(Box::new(gpu));
    }
    if shards.len() == 1 {
        let one = shards.pop().expect("one shard");
        return Ok((one, described));
    }
    Ok((Box::new(ShardedBackend::new(shards)?), described))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: usize, backend: &str, device_type: &str) -> AdapterInfoRow {
        AdapterInfoRow {
            index,
            name: format!("adapter{index}"),
            backend: backend.into(),
            device_type: device_type.into(),
            driver: String::new(),
            max_storage_buffer_binding_size: 0,
            max_buffer_size: 0,
            max_compute_workgroup_storage_size: 0,
            max_compute_invocations_per_workgroup: 0,
            max_storage_buffers_per_shader_stage: 0,
            shader_f16: false,
            timestamp_query: false,
            subgroup: false,
            preferred: index == 0,
        }
    }

    #[test]
    fn spellings_parse_and_print_back() {
        for text in ["best", "all", "0", "0,1", "0,0", "3,1,2"] {
            let d: Devices = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(
            Devices::parse_for(" 0, 1 ", "x").unwrap().to_string(),
            "0,1"
        );
        for bad in ["", "gpu", "0,", "-1", "256", "0;1", "1.5"] {
            let e = Devices::parse_for(bad, "--devices")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--devices") && e.contains("\"all\""),
                "{bad}: {e}"
            );
        }
        let many = vec!["0"; MAX_DEVICES + 1].join(",");
        assert!(Devices::parse_for(&many, "devices").is_err());
    }

    #[test]
    fn all_takes_hardware_adapters_of_one_api() {
        let rows = [
            row(0, "Vulkan", "DiscreteGpu"),
            row(1, "Vulkan", "Cpu"),
            row(2, "Gl", "DiscreteGpu"),
            row(3, "Vulkan", "DiscreteGpu"),
        ];
        assert_eq!(Devices::All.resolve(&rows).unwrap(), vec![Some(0), Some(3)]);
        // Only a software adapter (and GL's view of a GPU without Vulkan): the best adapter,
        // or the GL hardware one.
        assert_eq!(Devices::All.resolve(&rows[1..2]).unwrap(), vec![None]);
        assert_eq!(Devices::All.resolve(&rows[1..3]).unwrap(), vec![Some(2)]);
        assert_eq!(Devices::Best.resolve(&rows).unwrap(), vec![None]);
    }

    #[test]
    fn lists_keep_order_and_repeats_and_refuse_missing_adapters() {
        let rows = [row(0, "Vulkan", "Cpu"), row(1, "Vulkan", "DiscreteGpu")];
        let d: Devices = "1,0,1".parse().unwrap();
        assert_eq!(d.resolve(&rows).unwrap(), vec![Some(1), Some(0), Some(1)]);
        let e = Devices::parse_for("0,2", "devices")
            .unwrap()
            .resolve(&rows)
            .unwrap_err()
            .to_string();
        for want in [
            "devices",
            "adapter 2",
            "0 = adapter0",
            "1 = adapter1",
            "0 to 1",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = d.resolve(&[]).unwrap_err().to_string();
        assert!(e.contains("no GPU adapter"), "{e}");
    }

    #[test]
    fn devices_need_the_gpu_backend() {
        let d: Devices = "0,0".parse().unwrap();
        let e = d.check_backend(BackendKind::Cpu).unwrap_err().to_string();
        assert!(e.contains("devices") && e.contains("cpu"), "{e}");
        assert!(d.check_backend(BackendKind::Gpu).is_ok());
        assert!(Devices::Best.check_backend(BackendKind::Cpu).is_ok());
    }
}
