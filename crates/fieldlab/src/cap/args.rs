//! The arguments of `fieldlab cap ...`: clap types only.

use super::*;

#[derive(Subcommand)]
pub enum CapCmd {
    /// Commit records: RFC 6962 trees over canonical records; writes DIR/commitments.json.
    Prepare(PrepareArgs),
    /// Show a prepared directory's commitments; `--prove SET:INDEX` prints one record's inclusion proof.
    Inspect {
        dir: PathBuf,
        #[arg(long, value_name = "SET:INDEX")]
        prove: Option<String>,
    },
    /// Policies: validate, lint, compile, show.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Build the manifest (policy hash + roots of every set and list).
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// Evaluate the policy into a proof, verify it, export a signed bundle.
    #[command(subcommand)]
    Proof(ProofCmd),
    /// Verify a bundle offline. Exit 0 OK, 1 FAIL, 4 valid but policy not satisfied.
    VerifyBundle(VerifyArgs),
    /// The legacy offline verifier: `verifier run --package FILE`.
    #[command(subcommand)]
    Verifier(VerifierCmd),
    /// Signing keys: keygen, list, show, rotate, revoke, attest, verify-chain.
    Keys {
        /// Keyring directory.
        #[arg(long, default_value = "data/cap/keys", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Transparency registry: add, list, inspect, prove, verify.
    Registry {
        /// Registry data directory (registry.db, blobs/, audit.jsonl, keys/).
        #[arg(long, default_value = "data/cap", global = true)]
        data: PathBuf,
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
    /// Content-addressed blob store of the registry: list, get, release, gc.
    Blob {
        #[arg(long, default_value = "data/cap", global = true)]
        data: PathBuf,
        #[command(subcommand)]
        cmd: BlobCmd,
    },
    /// The hash-chained audit log: verify, tip, export.
    Audit {
        #[arg(long, default_value = "data/cap", global = true)]
        data: PathBuf,
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Prove (or refute) that every stored point of a series lay within a range.
    AttestSeries(SeriesArgs),
    /// Verify a series attestation file.
    VerifySeries { file: PathBuf },
    /// Run the verifier API alone (the legacy `cap-verifier-api`), with /healthz, /readyz,
    /// /metrics and /openapi.json; OAuth2 JWT scopes; TLS and mTLS.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(super) bind: String,
    /// Registry data directory; without it the registry endpoints answer 404.
    #[arg(long)]
    pub(super) data: Option<PathBuf>,
    /// Expected `iss` of bearer tokens.
    #[arg(long, env = "CAP_OAUTH_ISSUER")]
    pub(super) issuer: Option<String>,
    /// Expected `aud` of bearer tokens.
    #[arg(long, env = "CAP_OAUTH_AUDIENCE", default_value = "cap-verifier")]
    pub(super) audience: String,
    /// PEM public key(s) of the token issuer (RSA for RS256, Ed25519 for EdDSA).
    #[arg(long = "jwt-public-key", value_name = "PEM")]
    pub(super) jwt_pem: Vec<PathBuf>,
    /// JWKS file of the token issuer.
    #[arg(long)]
    pub(super) jwks: Option<PathBuf>,
    /// Serve without authentication (only allowed on a loopback address).
    #[arg(long)]
    pub(super) insecure_no_auth: bool,
    /// Require bundles to be signed by one of these keys: a KEY.pub.json, or a keyring file
    /// (one base64 public key per line, `#` comments); repeatable.
    #[arg(long, value_name = "KEY_OR_KEYRING")]
    pub(super) trust: Vec<PathBuf>,
    #[arg(long)]
    pub(super) tls_cert: Option<PathBuf>,
    #[arg(long)]
    pub(super) tls_key: Option<PathBuf>,
    /// Require client certificates from this CA (mTLS).
    #[arg(long)]
    pub(super) client_ca: Option<PathBuf>,
    /// Allowed client certificate subject (`CN=auditor` or a full DN); repeatable.
    #[arg(long = "allowed-subject")]
    pub(super) allowed_subjects: Vec<String>,
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate an Ed25519 key (secret file mode 0600).
    Keygen {
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Show {
        key: String,
    },
    /// New key attested by the old one; the old one is retired.
    Rotate {
        key: String,
    },
    Revoke {
        key: String,
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// SIGNER signs SUBJECT's public key.
    Attest {
        signer: String,
        subject: String,
    },
    /// Follow attestations from ROOT to LEAF; refuses revoked keys.
    VerifyChain {
        root: String,
        leaf: String,
    },
}

#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Register a file (e.g. a bundle); prints the entry and the new signed checkpoint.
    Add { file: PathBuf },
    List {
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// One entry, or the latest checkpoint and verifier key without an index.
    Inspect { index: Option<u64> },
    /// Inclusion proof of INDEX, or --consistency OLD_SIZE; JSON to stdout or --out.
    Prove {
        index: Option<u64>,
        #[arg(long)]
        consistency: Option<u64>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify the whole registry, or offline a proof file (--proof) or a signed checkpoint
    /// (--checkpoint). Their log key must be pinned with --vkey or --trust (else exit 5:
    /// signature valid, signer not trusted), or --allow-any-signer said.
    Verify {
        #[arg(long, conflicts_with = "checkpoint")]
        proof: Option<PathBuf>,
        /// A checkpoint: the JSON of `GET /registry/checkpoint` ({checkpoint, vkey, size}) or
        /// the bare signed note (then a key must be pinned).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// A trusted log key (`registry inspect` prints it); repeatable.
        #[arg(long)]
        vkey: Vec<String>,
        /// A keyring file of trusted log keys (one verifier key per line, `#` comments);
        /// repeatable.
        #[arg(long, value_name = "KEYRING")]
        trust: Vec<PathBuf>,
        /// Accept a signature by any log key (exit 0 instead of 5 without --vkey/--trust).
        #[arg(long, conflicts_with_all = ["vkey", "trust"])]
        allow_any_signer: bool,
    },
}

#[derive(Subcommand)]
pub enum BlobCmd {
    List,
    Get {
        hash: String,
        #[arg(long)]
        out: PathBuf,
    },
    Release {
        hash: String,
    },
    Gc,
}

#[derive(Subcommand)]
pub enum AuditCmd {
    Verify,
    Tip,
    /// Verify, then copy the log to OUT.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct SeriesArgs {
    #[arg(long)]
    pub(super) device: String,
    #[arg(long)]
    pub(super) field: String,
    /// Start: RFC 3339 time, epoch ms, or relative to now (`-1h`, `--from -10m` works too).
    #[arg(long, allow_hyphen_values = true)]
    pub(super) from: String,
    /// End, in the same forms as --from.
    #[arg(long, allow_hyphen_values = true, default_value = "now")]
    pub(super) to: String,
    /// Allowed range `a..b`, e.g. 2..8.
    #[arg(long)]
    pub(super) range: String,
    /// fieldlab data directory (the store).
    #[arg(long, default_value = "data")]
    pub(super) data_dir: PathBuf,
    /// Secret key file or keyring key to sign with.
    #[arg(long)]
    pub(super) key: Option<PathBuf>,
    #[arg(long, default_value = "data/cap/keys")]
    pub(super) keys: PathBuf,
    #[arg(long)]
    pub(super) out: Option<PathBuf>,
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Supplier CSV (columns id,name,country, optionally tier,audit_score).
    #[arg(long)]
    pub(super) suppliers: Option<PathBuf>,
    /// UBO CSV (columns id,supplier_id,name, optionally nationality,ownership_pct).
    #[arg(long)]
    pub(super) ubos: Option<PathBuf>,
    /// Any other records (CSV, JSON array or JSON lines); needs --schema and --set.
    #[arg(long)]
    pub(super) records: Option<PathBuf>,
    /// `suppliers`, `ubos` or a schema YAML file (name + fields with type string|integer|number|bool).
    #[arg(long)]
    pub(super) schema: Option<String>,
    /// Name of the set committed from --records.
    #[arg(long)]
    pub(super) set: Option<String>,
    /// Output directory.
    #[arg(long, default_value = "cap-work")]
    pub(super) out: PathBuf,
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Exit 0 valid, 2 valid with warnings, 3 invalid; prints only a summary.
    Validate { file: PathBuf },
    /// Print every finding with its code. Exit 0 / 2 / 3. `--codes` lists all codes.
    Lint {
        file: Option<PathBuf>,
        #[arg(long)]
        codes: bool,
    },
    /// Compile to the IR (RFC 8785 JSON) and print its hash.
    Compile {
        file: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the compiled rules in words.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
pub enum ManifestCmd {
    /// Write DIR/manifest.json, DIR/policy.ir.json and DIR/lists/*.json.
    Build {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        /// A public list the policy needs, e.g. `sanctions=examples/cap/sanctions.csv`.
        #[arg(long = "list", value_name = "NAME=CSV")]
        lists: Vec<String>,
        /// Shorthand for --list sanctions=FILE.
        #[arg(long)]
        sanctions: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ProofCmd {
    /// Evaluate every rule; writes DIR/proof.json.
    Build {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
    },
    /// Verify DIR/proof.json against DIR/manifest.json and DIR/policy.ir.json.
    Verify {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
    },
    /// Write the signed bundle (zip).
    Export {
        #[arg(long, default_value = "cap-work")]
        dir: PathBuf,
        /// Secret key file (see `fieldlab cap keys keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Write a `fieldlab.bundle/v2`: the signature is a DSSE envelope over an in-toto
        /// Statement v1 (readable by in-toto/DSSE tooling); default: `fieldlab.bundle/v1`.
        #[arg(long)]
        dsse: bool,
    },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle (zip).
    #[arg(value_name = "FILE")]
    pub(super) package: PathBuf,
    #[command(flatten)]
    pub(super) pin: PinArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// What a verification must trust: without a pinned signer a valid signature proves only that
/// someone signed, so that is its own exit code (5), never a pass by accident.
#[derive(Args, Clone)]
pub struct PinArgs {
    /// Require one of these signers: a public key file (`KEY.pub.json`) or a keyring file
    /// (one base64 Ed25519 public key per line, `#` comments); repeatable, any one may sign.
    #[arg(long, value_name = "KEY_OR_KEYRING")]
    pub(super) trust: Vec<PathBuf>,
    /// Accept a valid signature by any key (exit 0 instead of 5 without --trust): say so
    /// explicitly when the signer does not matter.
    #[arg(long, conflicts_with = "trust")]
    pub(super) allow_any_signer: bool,
    /// Require this policy hash (`policy_hash` of `cap policy compile`, hex): a bundle under
    /// any other policy fails, whatever its id says. Repeatable: any one may match.
    #[arg(long, value_name = "HEX")]
    pub(super) policy_hash: Vec<String>,
    /// A trusted policy list: a file of policy hashes, one per line (`#` comments); with
    /// --policy-hash, a bundle's policy must be one of them all. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub(super) trusted_policies: Vec<PathBuf>,
}

/// Exit code of a bundle whose signature is valid but whose signer nobody pinned.
pub(super) const EXIT_SIGNER_NOT_TRUSTED: u8 = 5;

#[derive(Subcommand)]
pub enum VerifierCmd {
    /// Verify a bundle offline (same as `cap verify-bundle`).
    Run {
        #[arg(long)]
        package: PathBuf,
        #[command(flatten)]
        pin: PinArgs,
        #[arg(long)]
        json: bool,
    },
}
