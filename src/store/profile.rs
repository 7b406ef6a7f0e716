//! The AWS CLI's shared credentials and config files (`~/.aws/credentials`,
//! `~/.aws/config`, `AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`,
//! `AWS_CONFIG_FILE`): the one credential source object_store does not
//! read itself, so the store reads it here, after the environment and web
//! identity, before container and instance metadata.

use std::path::Path;

/// What the AWS CLI's shared files say for one profile.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AwsProfile {
    pub name: String,
    /// (access key id, secret access key, session token)
    pub keys: Option<(String, String, Option<String>)>,
    pub region: Option<String>,
}

/// The profile the AWS CLI would use, from its shared credentials and
/// config files, looked up through `env` (the process environment, or a
/// test's). `None` when no file holds it and none was asked for by
/// `AWS_PROFILE`; an error when `AWS_PROFILE` names a profile no file has,
/// or a profile has half a key pair, naming the files.
pub fn aws_profile(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<AwsProfile>> {
    let explicit = env("AWS_PROFILE").filter(|p| !p.is_empty());
    let name = explicit.clone().unwrap_or_else(|| "default".into());
    let home = env("HOME").unwrap_or_default();
    let file = |var: &str, default: &str| {
        env(var)
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(&home).join(".aws").join(default))
    };
    let (creds_path, config_path) = (
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        file("AWS_CONFIG_FILE", "config"),
    );
    let load = |p: &Path| -> anyhow::Result<Option<ini::Ini>> {
        match ini::Ini::load_from_file(p) {
            Ok(i) => Ok(Some(i)),
            Err(ini::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("AWS profile file {}: {e}", p.display())),
        }
    };
    let creds = load(&creds_path)?;
    let config = load(&config_path)?;
    // The credentials file names sections by profile; the config file as
    // `[profile NAME]`, except `[default]`.
    let in_creds = creds.as_ref().and_then(|i| i.section(Some(name.as_str())));
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    let in_config = config
        .as_ref()
        .and_then(|i| i.section(Some(config_section.as_str())));
    if in_creds.is_none() && in_config.is_none() {
        if explicit.is_some() {
            anyhow::bail!(
                "AWS_PROFILE={name}: no such profile in {} or {}",
                creds_path.display(),
                config_path.display()
            );
        }
        return Ok(None);
    }
    let get = |k: &str| {
        in_creds
            .and_then(|s| s.get(k))
            .or_else(|| in_config.and_then(|s| s.get(k)))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let keys = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Some((id, secret, get("aws_session_token"))),
        (None, None) => None,
        _ => anyhow::bail!(
            "AWS profile {name} ({}): aws_access_key_id and aws_secret_access_key go together",
            creds_path.display()
        ),
    };
    Ok(Some(AwsProfile {
        name,
        keys,
        region: get("region"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_profiles_as_the_cli_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKD\naws_secret_access_key = SD\n\n\
             [ci]\naws_access_key_id=AKC\naws_secret_access_key=SC\naws_session_token=TC\n\
             [half]\naws_access_key_id=AKH\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile ci]\nregion=us-east-2\n\
             [profile only-config]\naws_access_key_id=AKO\naws_secret_access_key=SO\n",
        )
        .unwrap();
        let (c, k) = (
            creds.to_string_lossy().to_string(),
            config.to_string_lossy().to_string(),
        );
        let with = |profile: Option<&str>| {
            let (c, k) = (c.clone(), k.clone());
            let profile = profile.map(str::to_string);
            aws_profile(&move |v: &str| match v {
                "AWS_SHARED_CREDENTIALS_FILE" => Some(c.clone()),
                "AWS_CONFIG_FILE" => Some(k.clone()),
                "AWS_PROFILE" => profile.clone(),
                _ => None,
            })
        };
        let d = with(None).unwrap().unwrap();
        assert_eq!(d.keys, Some(("AKD".into(), "SD".into(), None)));
        assert_eq!(d.region.as_deref(), Some("eu-west-1"));
        let ci = with(Some("ci")).unwrap().unwrap();
        assert_eq!(
            ci.keys,
            Some(("AKC".into(), "SC".into(), Some("TC".into())))
        );
        assert_eq!(ci.region.as_deref(), Some("us-east-2"));
        let o = with(Some("only-config")).unwrap().unwrap();
        assert_eq!(o.keys, Some(("AKO".into(), "SO".into(), None)));
        let e = with(Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("AWS_PROFILE=nope") && e.contains("credentials"),
            "{e}"
        );
        let e = with(Some("half")).unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        // No files and no AWS_PROFILE: nothing, no error.
        let none = aws_profile(&|v: &str| (v == "HOME").then(|| "/nonexistent".to_string()));
        assert_eq!(none.unwrap(), None);
    }
}
