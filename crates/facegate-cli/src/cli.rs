//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "facegate",
    version,
    about = "On-device face recognition for gate terminals"
)]
pub struct Cli {
    /// Configuration file (default: /etc/facegate/facegate.toml if present, else built-in).
    #[arg(long, global = true, env = "FACEGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Logs as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// State directory (default: the config's, $STATE_DIRECTORY, or /var/lib/facegate).
    #[arg(long, global = true, env = "FACEGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Master key file (0600, owned by you), instead of the config's key source.
    #[arg(long, global = true, env = "FACEGATE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The gate service: watch the camera, decide, open the gate (systemd Type=notify).
    Run(RunArgs),
    /// The default job: verify the bundled astronaut portrait against altered copies of itself
    /// and reject other faces, printing each decision. Needs no camera.
    Demo(DemoArgs),
    /// Detect faces in images: boxes, scores, quality.
    Detect(DetectArgs),
    /// Compare the largest face of two images (1:1 verification).
    Compare(CompareArgs),
    /// Measure accuracy on labelled data.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Measure speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Check the configuration and the models it names, then exit. With --service (the unit's
    /// ExecStartPre) also the frame source, the gate output and the master key `run` needs.
    Validate {
        #[arg(long)]
        service: bool,
    },
    /// List the V4L2 cameras.
    Cameras(JsonArg),
    /// Create a new master key file (mode 0600; never overwrites); with --terminal also this
    /// terminal's transfer keys (sealed in the store) and print their public line.
    Keygen(KeygenArgs),
    /// Re-wrap every data key under a new master key (nobody is re-enrolled). Afterwards the
    /// store opens only with the new key; destroy the old one to retire old backups.
    RotateKey {
        /// The new key file (make it with `facegate keygen`).
        #[arg(long)]
        new_key_file: PathBuf,
        #[arg(long)]
        operator: String,
    },
    /// Delete expired templates now (the service also does it at start and on a schedule).
    Sweep,
    /// Enroll a person from image files, with their consent.
    Enroll(EnrollArgs),
    /// Record or withdraw a consent.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Enrolled people: list, show, delete, where they were sent.
    #[command(subcommand)]
    Subjects(SubjectsCommand),
    /// Move an enrollment to another terminal of the site (Art. 6, 8: only with a separate
    /// transfer consent naming it), sealed to its public key.
    #[command(subcommand)]
    Enrollment(EnrollmentCommand),
    /// The notice people are shown (Art. 5, 13): text, signage, retention, for the terminal's
    /// screen and the sign at the collection area.
    Notice {
        /// Language code (default: the notice's default language).
        #[arg(long)]
        lang: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// PIN, card and QR credentials (Art. 10): issued to anyone, with or without face consent.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// The gate output's wiring: what the unit must allow for it.
    #[command(subcommand)]
    Gate(GateCommand),
    /// 1:1 verification: is the face in IMAGE the claimed subject?
    Verify(VerifyArgs),
    /// 1:N identification: who is the face in IMAGE?
    Identify(IdentifyArgs),
    /// The processing record (Art. 9).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Impact assessment draft and filing material (Art. 9, 15).
    #[command(subcommand)]
    Report(ReportCommand),
    /// Health check: models, key, egress guard, camera, audit chain, filing threshold.
    /// Exit status 1 when anything needs attention.
    Doctor(JsonArg),
    /// The site relay (events to MQTT): runs `facegate-relay` from beside this binary with
    /// these arguments (`run`, `validate`, `--config FILE`). It is a separate program outside
    /// the egress guard; this process hands over before installing the guard and never
    /// processes a face itself.
    Relay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GateCommand {
    /// Print the systemd drop-in that lets facegate.service reach exactly the configured OSDP
    /// serial device (install it as /etc/systemd/system/facegate.service.d/osdp.conf).
    UnitDropin,
}

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Issue a credential to a holder. The value is read from standard input (one line), or
    /// generated with --generate (PINs) and printed once.
    Issue {
        /// The holder's id (an employee or card number, not a name); no face consent needed.
        holder: String,
        #[arg(long, value_parser = parse_kind)]
        kind: facegate_policy::CredentialKind,
        /// Generate a random 6-digit PIN instead of reading one.
        #[arg(long)]
        generate: bool,
        /// A label for the operator ("blue card", "visitor QR"); never the value.
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        operator: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a holder's live credentials (all, one --id, or one --kind).
    Revoke {
        holder: String,
        #[arg(long)]
        id: Option<i64>,
        #[arg(long, value_parser = parse_kind)]
        kind: Option<facegate_policy::CredentialKind>,
        #[arg(long)]
        operator: String,
        #[arg(long, default_value = "revoked by operator")]
        reason: String,
    },
    /// The register (ids, holders, kinds, dates; never values).
    List {
        holder: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_kind(s: &str) -> Result<facegate_policy::CredentialKind, String> {
    s.parse()
        .map_err(|e: facegate_policy::PolicyError| e.to_string())
}

#[derive(Debug, Args)]
pub struct JsonArg {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The new master key file.
    #[arg(required_unless_present = "terminal")]
    pub path: Option<PathBuf>,
    /// Also make this terminal's transfer key pair (X25519 to receive enrollments, Ed25519 to
    /// sign them and withdrawal notices), sealed in the store of --state-dir under the master
    /// key (PATH, or the configured one); kept if it exists. Prints the public line.
    #[arg(long)]
    pub terminal: bool,
    /// The terminal's name in its public line (default: the host name).
    #[arg(long, requires = "terminal")]
    pub name: Option<String>,
    /// Write the public line to this file too (for the site's other terminals).
    #[arg(long, value_name = "FILE", requires = "terminal")]
    pub public_out: Option<PathBuf>,
}

/// Who consented, how, and who took it (Art. 6, 7).
#[derive(Debug, Args)]
pub struct ConsentArgs {
    /// Age in years, from the enrollment record (never guessed from the face).
    #[arg(long)]
    pub age: u8,
    /// How consent was given.
    #[arg(long, value_enum, default_value_t = MethodArg::Written)]
    pub method: MethodArg,
    /// The operator taking the consent.
    #[arg(long)]
    pub operator: String,
    /// Guardian's identity reference (required under 14).
    #[arg(long)]
    pub guardian_id: Option<String>,
    #[arg(long, value_enum, default_value_t = RelationArg::Parent)]
    pub guardian_relation: RelationArg,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The subject id (an employee or card number, not a name).
    pub subject: String,
    /// Photos of the person: one whole face each (see --face and --largest for photos with
    /// several), all of the same person.
    #[arg(required_unless_present = "from")]
    pub images: Vec<PathBuf>,
    /// Take the samples from a live source instead (`camera:0`, or a Y4M file to rehearse):
    /// a count-down in the terminal, then the first good, live frames are used.
    #[arg(long, conflicts_with = "images")]
    pub from: Option<String>,
    /// Samples to take from the live source.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// In photos with several faces, enroll face N (1 = the detector's most confident, as
    /// `facegate detect` lists them); without it or --largest such photos are refused.
    #[arg(long, value_name = "N", conflicts_with = "largest")]
    pub face: Option<usize>,
    /// In photos with several faces, enroll the largest one.
    #[arg(long)]
    pub largest: bool,
    /// The photos are ID photos (the face fills the picture, forehead or chin cut): look with
    /// a margin and the fallback detector when the face fills the photo. The operator vouches
    /// that each photo shows a whole face: a part of a face (the lower half, say) on a margin
    /// looks like an ID photo to both detectors, so the fragment check cannot refuse it here.
    #[arg(long, conflicts_with = "from")]
    pub id_photo: bool,
    /// Enroll although the face already matches this enrolled subject (twins, a second id the
    /// site needs); needs --reason, and both go into the audit record.
    #[arg(long, value_name = "SUBJECT", requires = "reason")]
    pub allow_duplicate_of: Option<String>,
    /// Why the duplicate is allowed.
    #[arg(long, value_name = "TEXT", requires = "allow_duplicate_of")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub consent: ConsentArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Record a consent without enrolling a face yet; with --transfer-to, the separate
    /// transfer consent (Art. 6, 8) for those terminals instead.
    Grant {
        subject: String,
        #[command(flatten)]
        consent: ConsentArgs,
        /// Record a transfer consent naming this receiving terminal (its public key file or
        /// line, or its 32-digit id); repeat for several.
        #[arg(long, value_name = "TERMINAL")]
        transfer_to: Vec<String>,
    },
    /// Withdraw: deletes the person's templates and key at once.
    Withdraw {
        subject: String,
        #[arg(long)]
        operator: String,
        #[arg(long, value_enum, default_value_t = MethodArg::Terminal)]
        method: MethodArg,
        /// Write a withdrawal notice signed by this terminal, for the terminals the person was
        /// sent to or received from (`facegate consent apply-withdrawal` there).
        #[arg(long, value_name = "FILE")]
        notice_out: Option<PathBuf>,
    },
    /// Apply a withdrawal notice signed by another terminal of the site: deletes the person's
    /// templates here at once (idempotent).
    ApplyWithdrawal {
        file: PathBuf,
        #[arg(long)]
        operator: String,
    },
    /// People whose live consent was given under an older notice version (Art. 5: tell them
    /// of the change, or ask again); `[notice] pending` says what the gate does meanwhile.
    Pending(JsonArg),
}

#[derive(Debug, Subcommand)]
pub enum SubjectsCommand {
    List(JsonArg),
    Show {
        subject: String,
        #[arg(long)]
        json: bool,
    },
    /// The terminals a person was sent to (and received from), from this terminal's records.
    Where {
        subject: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a person's templates, key and consents (the audit record stays).
    Delete {
        subject: String,
        #[arg(long)]
        operator: String,
        #[arg(long, default_value = "operator request")]
        reason: String,
        /// Write a withdrawal notice signed by this terminal, for the terminals the person was
        /// exchanged with (they delete the person too).
        #[arg(long, value_name = "FILE")]
        notice_out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnrollmentCommand {
    /// Seal a person's templates, consent and retention to another terminal's public key.
    Export {
        subject: String,
        /// The receiving terminal's public key (file or line, from its `keygen --terminal`).
        #[arg(long, value_name = "PUBKEY")]
        to: String,
        /// The bundle file to write (never overwritten; mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long)]
        operator: String,
    },
    /// Check a bundle made for this terminal and store the enrollment it carries.
    Import {
        file: PathBuf,
        /// The sending terminal's public key (file or line): bundles are accepted only from a
        /// terminal the operator names.
        #[arg(long, value_name = "PUBKEY")]
        from: String,
        #[arg(long)]
        operator: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub subject: String,
    pub image: PathBuf,
    #[arg(long, default_value = "cli")]
    pub operator: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdentifyArgs {
    pub image: PathBuf,
    #[arg(long, default_value = "cli")]
    pub operator: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain (and the head kept beside the database); exit 1 and say where
    /// if anything was edited, removed, reordered, cut off or rolled back. With --export, check
    /// a file written by `audit export` instead, with this store's audit key.
    Verify {
        #[arg(long)]
        json: bool,
        /// An export (JSON lines from `facegate audit export`) to check.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// Print records as JSON lines, each with its chain links (mac, prev_mac) so that an
    /// export can be checked later with `audit verify --export`.
    Export {
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
    /// Remove the records older than DAYS days as one prefix and re-anchor the chain; refused
    /// for records younger than three years (Art. 9).
    Prune {
        #[arg(long)]
        older_than_days: u32,
        #[arg(long)]
        operator: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Draft the personal information protection impact assessment (Markdown).
    Pia {
        /// Record this assessment as signed off (later drafts compare against it).
        #[arg(long)]
        record: bool,
    },
    /// The Art. 15 filing material (Markdown); `--export` writes this terminal's count for a
    /// merge, `--merge` counts distinct people over several terminals' exports.
    Filing(FilingArgs),
}

#[derive(Debug, Args)]
pub struct FilingArgs {
    /// Write this terminal's filing export (JSON: processor, site, terminal, subject ids with
    /// stored templates; no face data) to FILE, for `--merge` on another machine.
    #[arg(long, value_name = "FILE", conflicts_with = "merge")]
    pub export: Option<PathBuf>,
    /// The terminal's name in the export (default: the host name).
    #[arg(long, requires = "export")]
    pub terminal: Option<String>,
    /// Count distinct people (by subject id, never by face) over these terminals' exports,
    /// one per terminal, of one processor; reads no store.
    #[arg(long, value_name = "FILES", num_args = 1..)]
    pub merge: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Overrides `[service] source`: a camera, an image, a folder or a Y4M file (replays end the
    /// service when they end).
    #[arg(long)]
    pub source: Option<String>,
    /// Read alternative credentials from standard input, one per line: `pin VALUE`,
    /// `card VALUE`, `qr VALUE` or `override OPERATOR` (tests and kiosks).
    #[arg(long)]
    pub credentials_stdin: bool,
    /// Pace replayed files at their frame rate instead of as fast as possible.
    #[arg(long)]
    pub realtime: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// LFW View 2 (10-fold accuracy, TAR at FAR) or any LFW-format pair list.
    Lfw(LfwArgs),
    /// Detection on the WIDER FACE validation sample (easy/medium/hard).
    Wider(WiderArgs),
    /// The deepface pair lists (master.csv, pivot.csv).
    Pairs(PairsArgs),
    /// Cosine thresholds at FMR 1e-2 down to 1e-7 from impostor scores, with the number of
    /// impostor pairs behind each and its 95 % upper bound.
    Calibrate(CalibrateArgs),
    /// Open-set identification on LFW: the FPIR at each target and gallery size.
    Fpir(FpirArgs),
    /// Presentation-attack detection: APCER per attack species and BPCER, challenge off and on.
    Liveness(LivenessEvalArgs),
    /// Whether flip test-time augmentation changes decisions at the operating points, on LFW
    /// and the live clips (each variant at its own calibrated threshold).
    Flip(FlipEvalArgs),
    /// For the int8 quantiser only (`deploy/quantise.py calibrate`): the model inputs of the
    /// calibration images, as this pipeline makes them, as raw little-endian f32 on stdout.
    /// Refuses unless stdout is a pipe: face data never goes to a file.
    #[command(hide = true)]
    CalibrationInputs(CalibrationInputsArgs),
}

#[derive(Debug, Args)]
pub struct CalibrationInputsArgs {
    /// Which model's input: the embedder's aligned crop or the detector's resized frame.
    #[arg(long, value_enum)]
    pub role: CalibrationRole,
    /// The LFW pair list whose images are used (View 1 DevTrain: never the test pairs).
    #[arg(long, default_value = "../shared/eval/lfw/pairsDevTrain.txt")]
    pub pairs: PathBuf,
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// How many images (the first N of the list's distinct images, sorted).
    #[arg(long, default_value_t = 300)]
    pub limit: usize,
}

/// The model whose input `eval calibration-inputs` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CalibrationRole {
    Embedder,
    Detector,
}

#[derive(Debug, Args)]
pub struct FlipEvalArgs {
    /// The LFW folder (with `images/`, `pairs.txt` and `pairsDevTest.txt`).
    #[arg(long, default_value = "../shared/eval/lfw")]
    pub lfw: PathBuf,
    /// The evaluation data holding the live clips (liveness/, blink/, headturn/, video/...).
    #[arg(long, default_value = "../shared/eval")]
    pub dir: PathBuf,
    /// Operating points (false-match rates) at which decisions are compared.
    #[arg(long, value_delimiter = ',', default_values_t = [1e-3, 1e-4, 1e-5])]
    pub fmr: Vec<f64>,
    /// Every this many frames of each clip are compared.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub every: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LivenessEvalArgs {
    /// The evaluation data (liveness/, attacks/, blink/, headturn/, lfw/).
    #[arg(long, default_value = "../shared/eval")]
    pub dir: PathBuf,
    /// Random seeds (each draws the challenges, the reaction delays and the replays' starts).
    #[arg(long, default_value_t = 40)]
    pub seeds: u32,
    /// LFW people rendered as still and moved photos (besides a frame of each live clip).
    #[arg(long, default_value_t = 12)]
    pub photos: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LfwArgs {
    /// The pair list (header `folds per_class` or `per_class`).
    #[arg(long, default_value = "../shared/eval/lfw/pairs.txt")]
    pub pairs: PathBuf,
    /// The image folder (default: `images` beside the pair list).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Only the first N pairs of each fold (quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Embed without flip test-time augmentation, whatever the config says.
    #[arg(long, conflicts_with = "flip")]
    pub no_flip: bool,
    /// Embed with flip test-time augmentation, whatever the config says (its `auto` embeds
    /// once at the default operating point).
    #[arg(long)]
    pub flip: bool,
    /// The ID-photo protocol: images replaced by their centre 84x100, grey, with harsh
    /// contrast (`facegate_vision::eval::tight_grey_crop`): `both` images of every pair, or
    /// only the `first` (an ID photo enrolled, the person seen as they are).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "both")]
    pub tight_crop: Option<TightCrop>,
    /// Only the first look at each photo (no margin, no fallback detector): the detector alone.
    #[arg(long)]
    pub direct_only: bool,
    /// A measurement, not the product: each tight crop aligned with the landmarks found on its
    /// uncropped image (moved into the crop's coordinates), to tell what the crop removes from
    /// what the landmarks found on it get wrong.
    #[arg(long, requires = "tight_crop")]
    pub landmarks_from_uncropped: bool,
    #[arg(long)]
    pub json: bool,
}

/// Which images of each pair the ID-photo protocol crops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TightCrop {
    Both,
    First,
}

#[derive(Debug, Args)]
pub struct WiderArgs {
    #[arg(long, default_value = "../shared/eval/wider")]
    pub dir: PathBuf,
    /// Detector score threshold for the evaluation (AP wants a low one).
    #[arg(long, default_value_t = 0.3)]
    pub threshold: f32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PairsArgs {
    #[arg(long, default_value = "../shared/eval/deepface")]
    pub dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// LFW pair lists whose images give the impostor scores (all cross-identity pairs).
    #[arg(long, default_value = "../shared/eval/lfw/pairsDevTrain.txt")]
    pub pairs: PathBuf,
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Calibrate on the LFW split instead: every image but each person's first (kept for
    /// `eval fpir`) and the images the tests use (View 1 DevTest and a few named photos).
    #[arg(long)]
    pub split: bool,
    /// The LFW folder (with `images/` and `pairsDevTest.txt`), for --split.
    #[arg(long, default_value = "../shared/eval/lfw")]
    pub lfw: PathBuf,
    /// Embed without flip test-time augmentation: the table for `flip_tta` off
    /// (`calibration_no_flip`). Without it, flip is on: the manifest's `calibration`.
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FpirArgs {
    /// The LFW folder (with `images/`).
    #[arg(long, default_value = "../shared/eval/lfw")]
    pub lfw: PathBuf,
    /// Gallery sizes (people enrolled, one photo each).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub sizes: Vec<usize>,
    /// FPIR targets, each mapped to a threshold per gallery size as `[matching] fpir` is.
    #[arg(long, value_delimiter = ',', default_value = "1e-2,1e-3")]
    pub fpir: Vec<f64>,
    /// Random galleries per size (fixed seeds).
    #[arg(long, default_value_t = 5)]
    pub seeds: usize,
    /// Only this many people of LFW (a fixed random subset; all by default).
    #[arg(long)]
    pub people: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Per-stage latency over a folder of images or a Y4M stream.
    Pipeline(PipelineBenchArgs),
    /// 1:N search time over a synthetic face population: every mode in one run, against exact.
    Gallery(GalleryBenchArgs),
}

#[derive(Debug, Args)]
pub struct GalleryBenchArgs {
    /// Templates in the gallery.
    #[arg(long, default_value_t = 100_000)]
    pub size: usize,
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    #[arg(long, default_value_t = 512)]
    pub dim: usize,
    /// Only this mode (beside exact, the reference); every mode when absent.
    #[arg(long, value_enum)]
    pub mode: Option<SearchModeArg>,
    /// The 1:N threshold the searches are told (decisions are then checked at it); without
    /// it the prefilter keeps the top-1 and decisions are checked at 0.3504 and 0.5121.
    #[arg(long)]
    pub threshold: Option<f32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PipelineBenchArgs {
    /// A folder of images, a Y4M file or an image.
    pub path: PathBuf,
    /// Stop after this many frames.
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    /// Frames run first and not measured.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Run liveness on every face too.
    #[arg(long)]
    pub liveness: bool,
    #[arg(long)]
    pub json: bool,
}

/// `--method`: how consent was given, spelled as the consent record stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum MethodArg {
    Written,
    Electronic,
    Terminal,
}

impl From<MethodArg> for facegate_policy::ConsentMethod {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Written => Self::Written,
            MethodArg::Electronic => Self::Electronic,
            MethodArg::Terminal => Self::Terminal,
        }
    }
}

/// `--guardian-relation`, spelled as the consent record stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RelationArg {
    Parent,
    LegalGuardian,
}

impl From<RelationArg> for facegate_policy::GuardianRelation {
    fn from(r: RelationArg) -> Self {
        match r {
            RelationArg::Parent => Self::Parent,
            RelationArg::LegalGuardian => Self::LegalGuardian,
        }
    }
}

/// `bench gallery --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SearchModeArg {
    /// Prefiltered for large galleries, exact for small ones.
    Auto,
    /// Every row in f32.
    Exact,
    /// The int8 copy, then every row that could reach the reported scores re-scored in f32.
    Quantised,
    /// 1-bit codes by Hamming distance, the nearest re-scored in f32, int8 as the fallback.
    Prefiltered,
}

impl SearchModeArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Exact => "exact",
            Self::Quantised => "quantised",
            Self::Prefiltered => "prefiltered",
        }
    }
}

impl From<SearchModeArg> for facegate_store::SearchMode {
    fn from(m: SearchModeArg) -> Self {
        match m {
            SearchModeArg::Auto => Self::Auto,
            SearchModeArg::Exact => Self::Exact,
            SearchModeArg::Quantised => Self::Quantised,
            SearchModeArg::Prefiltered => Self::Prefiltered,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The command line spells each value as the consent record does (serde of the policy's
    /// types), so an operator types what `subjects show` prints.
    #[test]
    fn argument_values_are_the_record_spellings() {
        for m in MethodArg::value_variants() {
            let name = m.to_possible_value().unwrap().get_name().to_string();
            let stored = serde_json::to_value(facegate_policy::ConsentMethod::from(*m)).unwrap();
            assert_eq!(stored, serde_json::Value::String(name));
        }
        for r in RelationArg::value_variants() {
            let name = r.to_possible_value().unwrap().get_name().to_string();
            let stored = serde_json::to_value(facegate_policy::GuardianRelation::from(*r)).unwrap();
            assert_eq!(stored, serde_json::Value::String(name));
        }
        for m in SearchModeArg::value_variants() {
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.as_str());
        }
    }

    #[test]
    fn an_unknown_value_names_the_allowed_ones() {
        let err = Cli::try_parse_from([
            "facegate",
            "consent",
            "withdraw",
            "alice",
            "--operator",
            "o",
            "--method",
            "fax",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("invalid value 'fax' for '--method <METHOD>'")
                && err.contains("[possible values: written, electronic, terminal]"),
            "{err}"
        );
        let err = Cli::try_parse_from(["facegate", "bench", "gallery", "--mode", "fast"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[possible values: auto, exact, quantised, prefiltered]"),
            "{err}"
        );
    }
}
