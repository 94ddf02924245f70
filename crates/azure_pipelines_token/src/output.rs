//! What the tool prints on success: the `--output` formats, the az-shaped JSON, and the Azure
//! Pipelines logging commands with the agent's escaping.

use serde::Serialize;
use std::io::{self, Write};
use time::{OffsetDateTime, UtcOffset, macros::format_description};

/// What to print on success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// The JSON object of `az account get-access-token`.
    Json,
    /// The bare token and a newline.
    Token,
    /// `Bearer <token>` and a newline: what cargo's `cargo:token-from-stdout` credential
    /// provider passes on as the `Authorization` header of an Azure Artifacts feed.
    Bearer,
    /// Logging commands that set the secret pipeline variable NAME to the token, and the
    /// variable NAME_EXPIRES_ON to its expiry (Unix seconds).
    Vso(String),
}

/// The suffix of the variable that `--output vso=NAME` sets to the token's expiry.
pub(crate) const EXPIRES_ON_SUFFIX: &str = "_EXPIRES_ON";

/// Parses `--output`; a failure is a usage error (exit 2).
pub(crate) fn parse_output(value: &str) -> Result<Output, String> {
    match value {
        "json" => Ok(Output::Json),
        "token" => Ok(Output::Token),
        "bearer" => Ok(Output::Bearer),
        _ => match value.strip_prefix("vso=") {
            // The name is also escaped when printed (see `escape`); this check keeps names that
            // the agent would take apart, or that a later step could not read back as
            // $(NAME) / $NAME, from being accepted at all.
            Some(name)
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) =>
            {
                Ok(Output::Vso(name.to_owned()))
            }
            Some(_) => Err(
                "the variable name in vso=NAME must be non-empty and contain only \
                            letters, digits, '_', '.' and '-'"
                    .to_owned(),
            ),
            None => Err("expected json, token, bearer or vso=NAME".to_owned()),
        },
    }
}

/// The token, as the output needs it.
pub(crate) struct Printed<'a> {
    /// The access token.
    pub(crate) token: &'a str,
    /// When it expires.
    pub(crate) expires_on: OffsetDateTime,
    /// Its type, `Bearer`.
    pub(crate) token_type: &'a str,
    /// The tenant that issued it.
    pub(crate) tenant: &'a str,
}

/// The JSON output, in the shape (and key order) of `az account get-access-token`.
#[derive(Serialize)]
struct JsonOutput<'a> {
    /// The token itself.
    #[serde(rename = "accessToken")]
    access_token: &'a str,
    /// Local time, formatted like az: `YYYY-MM-DD HH:MM:SS.ffffff`.
    #[serde(rename = "expiresOn")]
    expires_on_local: String,
    /// Unix seconds.
    expires_on: i64,
    /// The tenant that issued the token.
    tenant: &'a str,
    /// `Bearer`.
    #[serde(rename = "tokenType")]
    token_type: &'a str,
}

/// Writes the token to `out` in the requested shape.
pub(crate) fn print(
    out: &mut impl Write,
    output: &Output,
    token: &Printed<'_>,
    local_offset: UtcOffset,
) -> io::Result<()> {
    match output {
        Output::Json => {
            let json = JsonOutput {
                access_token: token.token,
                expires_on_local: az_time(token.expires_on.to_offset(local_offset)),
                expires_on: token.expires_on.unix_timestamp(),
                tenant: token.tenant,
                token_type: token.token_type,
            };
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)?;
        }
        Output::Token => writeln!(out, "{}", token.token)?,
        Output::Bearer => writeln!(out, "Bearer {}", token.token)?,
        Output::Vso(name) => {
            writeln!(out, "{}", set_variable(name, true, token.token))?;
            let expires_on = token.expires_on.unix_timestamp().to_string();
            let expires_name = format!("{name}{EXPIRES_ON_SUFFIX}");
            writeln!(out, "{}", set_variable(&expires_name, false, &expires_on))?;
        }
    }
    out.flush()
}

/// The `task.setvariable` logging command that sets `name` to `value` (a secret, masked in the
/// logs, when `secret`), with both escaped so that neither can end the property list, start
/// another command or another line.
pub(crate) fn set_variable(name: &str, secret: bool, value: &str) -> String {
    let secret = if secret { ";issecret=true" } else { "" };
    format!(
        "##vso[task.setvariable variable={}{secret}]{}",
        escape(name),
        escape(value)
    )
}

/// Escapes a property value or the data of an Azure Pipelines logging command as the agent
/// unescapes them.
///
/// The agent (microsoft/azure-pipelines-agent) parses `##vso[area.event k=v;k=v]data` in
/// `Command.TryParse` (src/Microsoft.VisualStudio.Services.Agent/Command.cs): the command ends
/// at the first `]`, properties are split on `;`, and each property value and the data are
/// unescaped with `CommandStringConvertor.Unescape` (src/Agent.Sdk/CommandStringConvertor.cs):
/// `%3B` -> `;`, `%0D` -> `\r`, `%0A` -> `\n`, `%5D` -> `]`, then `%AZP25` -> `%` (the
/// `DECODE_PERCENTS` knob, on by default; docs/design/percentEncoding.md). The matching
/// `CommandStringConvertor.Escape` replaces `%` first, then the four others, which is what this
/// does, for property values and data alike (the agent unescapes both the same way). The
/// azure-pipelines-task-lib's node/taskcommand.ts escapes the same way (`%` -> `%AZP25` first;
/// older versions wrote `%25`, which the agent no longer decodes). The agent reads output line
/// by line (`\r`, `\n`), so once both are escaped no value can start another command.
pub(crate) fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => escaped.push_str("%AZP25"),
            ';' => escaped.push_str("%3B"),
            '\r' => escaped.push_str("%0D"),
            '\n' => escaped.push_str("%0A"),
            ']' => escaped.push_str("%5D"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Formats like Python's `%Y-%m-%d %H:%M:%S.%f`, which az uses for `expiresOn`.
pub(crate) fn az_time(t: OffsetDateTime) -> String {
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_parsing() {
        assert_eq!(parse_output("json"), Ok(Output::Json));
        assert_eq!(parse_output("token"), Ok(Output::Token));
        assert_eq!(parse_output("bearer"), Ok(Output::Bearer));
        assert_eq!(
            parse_output("vso=My_Token.v-2"),
            Ok(Output::Vso("My_Token.v-2".into()))
        );
        for bad in [
            "xml",
            "vso=",
            "vso=bad name",
            "vso=a;b",
            "vso=a]b",
            "vso=a%b",
            "vso=a\n##vso[task.setvariable variable=PATH]x",
            "JSON",
            "Bearer",
        ] {
            assert!(parse_output(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn az_time_format() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(az_time(t), "2023-11-14 22:13:20.123456");
    }

    /// The agent's side: `CommandStringConvertor.Unescape` after `Command.TryParse` split the
    /// line, as cited on [`escape`].
    fn agent_unescape(s: &str) -> String {
        s.replace("%3B", ";")
            .replace("%0D", "\r")
            .replace("%0A", "\n")
            .replace("%5D", "]")
            .replace("%AZP25", "%")
    }

    /// The agent's parse of one line: (command, properties, data), or `None` when it holds no
    /// command. As `Command.TryParse`: the first `##vso[`, the first `]` after it, properties
    /// split on `;` and then on the first `=`.
    fn agent_parse(line: &str) -> Option<(String, Vec<(String, String)>, String)> {
        let start = line.find("##vso[")? + "##vso[".len();
        let end = start + line[start..].find(']')?;
        let info = &line[start..end];
        let (command, properties) = info.split_once(' ').unwrap_or((info, ""));
        let properties = properties
            .split(';')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), agent_unescape(v)))
            .collect();
        Some((
            command.to_owned(),
            properties,
            agent_unescape(&line[end + 1..]),
        ))
    }

    const HOSTILE: &[&str] = &[
        "\n##vso[task.setvariable variable=PATH]x",
        "\r##vso[task.setvariable variable=PATH]x",
        "a;issecret=false",
        "a]##vso[task.complete result=Failed]",
        "100%",
        "%3B%0A%0D%5D%AZP25",
        "%%AZP25%",
        "plain.value-1_2~+/=",
        "",
    ];

    #[test]
    fn escaping_round_trips_through_the_agent_and_never_breaks_out() {
        for name in HOSTILE.iter().chain(&["MY_TOKEN"]) {
            for value in HOSTILE {
                let line = set_variable(name, true, value);
                // One line, so no second command; a `##vso[` inside a value is data, as the
                // agent takes the first one of a line.
                assert!(!line.contains(['\n', '\r']), "{line:?}");
                assert!(line.starts_with("##vso[task.setvariable variable="));
                let (command, properties, data) = agent_parse(&line).expect("a command");
                assert_eq!(command, "task.setvariable");
                assert_eq!(
                    properties,
                    [
                        ("variable".to_owned(), name.to_string()),
                        ("issecret".to_owned(), "true".to_owned())
                    ],
                    "{line:?}"
                );
                assert_eq!(data, *value, "{line:?}");
            }
        }
    }

    #[test]
    fn escaping_follows_the_agent_table() {
        assert_eq!(escape("a%b;c\rd\ne]f"), "a%AZP25b%3Bc%0Dd%0Ae%5Df");
        // A literal escape sequence survives: `%` is replaced first.
        assert_eq!(escape("%3B"), "%AZP253B");
        assert_eq!(agent_unescape(&escape("%3B")), "%3B");
        // The b64token alphabet of access tokens is left alone.
        let token = "eyJ0eXAi.eyJhdWQi-_~+/.c2ln==";
        assert_eq!(escape(token), token);
    }

    fn printed(output: &Output) -> String {
        let token = Printed {
            token: "header.payload.signature",
            expires_on: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            token_type: "Bearer",
            tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47",
        };
        let mut out = Vec::new();
        print(&mut out, output, &token, UtcOffset::UTC).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_output_shape() {
        assert_eq!(
            printed(&Output::Json),
            "{\n  \"accessToken\": \"header.payload.signature\",\n  \"expiresOn\": \
             \"2023-11-14 22:13:20.000000\",\n  \"expires_on\": 1700000000,\n  \"tenant\": \
             \"72f988bf-86f1-41af-91ab-2d7cd011db47\",\n  \"tokenType\": \"Bearer\"\n}\n"
        );
        assert_eq!(printed(&Output::Token), "header.payload.signature\n");
        assert_eq!(
            printed(&Output::Bearer),
            "Bearer header.payload.signature\n"
        );
        assert_eq!(
            printed(&Output::Vso("MY_TOKEN".into())),
            "##vso[task.setvariable variable=MY_TOKEN;issecret=true]header.payload.signature\n\
             ##vso[task.setvariable variable=MY_TOKEN_EXPIRES_ON]1700000000\n"
        );
    }
}
