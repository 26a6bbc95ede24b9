//! The combinations of options the golden tests pin and the netns tests apply for real.

/// One combination of options (and, optionally, pod annotations).
pub struct Case {
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub annotations: Option<&'static str>,
}

pub const CASES: &[Case] = &[
    Case {
        name: "native-defaults",
        args: &[],
        annotations: None,
    },
    Case {
        name: "native-no-loopback-only-ports",
        args: &["--loopback-only-ports", ""],
        annotations: None,
    },
    Case {
        name: "native-custom-loopback-only-ports",
        args: &["--loopback-only-ports", "19000,15030,9901"],
        annotations: None,
    },
    Case {
        name: "sidecar-defaults",
        args: &["--mode", "sidecar"],
        annotations: None,
    },
    Case {
        name: "sidecar-include-inbound-ports-list",
        args: &[
            "--mode",
            "sidecar",
            "--include-inbound-ports",
            "9080,8080,9090",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-include-inbound-ports-empty-captures-nothing",
        args: &["--mode", "sidecar", "--include-inbound-ports", ""],
        annotations: None,
    },
    Case {
        name: "sidecar-exclude-inbound-ports",
        args: &[
            "--mode",
            "sidecar",
            "--exclude-inbound-ports",
            "15020,15021,15090",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-include-outbound-ip-ranges",
        args: &[
            "--mode",
            "sidecar",
            "--include-outbound-ip-ranges",
            "10.96.0.0/12,fd00:10:96::/112",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-include-outbound-ip-ranges-empty",
        args: &["--mode", "sidecar", "--include-outbound-ip-ranges", ""],
        annotations: None,
    },
    Case {
        name: "sidecar-exclude-outbound-ip-ranges",
        args: &[
            "--mode",
            "sidecar",
            "--exclude-outbound-ip-ranges",
            "169.254.169.254/32,10.1.2.3/8,2001:db8::/32",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-outbound-ports",
        args: &[
            "--mode",
            "sidecar",
            "--include-outbound-ip-ranges",
            "",
            "--include-outbound-ports",
            "5432,6379",
            "--exclude-outbound-ports",
            "22,3306:3310",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-loopback-in-outbound-ip-ranges",
        args: &[
            "--mode",
            "sidecar",
            "--include-outbound-ip-ranges",
            "127.0.0.0/8,10.0.0.0/8",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-custom-ids-capture-ports-and-edge-ports",
        args: &[
            "--mode",
            "sidecar",
            "--proxy-uid",
            "2000",
            "--proxy-gid",
            "3000",
            "--inbound-capture-port",
            "16006",
            "--outbound-capture-port",
            "16001",
            "--edge-ports",
            "80,443",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-no-edge-ports-no-loopback-only-ports",
        args: &[
            "--mode",
            "sidecar",
            "--edge-ports",
            "",
            "--loopback-only-ports",
            "",
        ],
        annotations: None,
    },
    Case {
        name: "sidecar-annotations-override-options",
        args: &[
            "--mode",
            "sidecar",
            "--exclude-inbound-ports",
            "1111",
            "--include-outbound-ip-ranges",
            "*",
        ],
        annotations: Some(
            "kubectl.kubernetes.io/default-container=\"gateway\"\n\
             traffic.sidecar.istio.io/includeInboundPorts=\"*\"\n\
             traffic.sidecar.istio.io/excludeInboundPorts=\"15020,15021,15090\"\n\
             traffic.sidecar.istio.io/includeOutboundIPRanges=\"10.96.0.0/12\"\n\
             traffic.sidecar.istio.io/excludeOutboundIPRanges=\"10.96.0.1/32\"\n\
             traffic.sidecar.istio.io/includeOutboundPorts=\"443\"\n\
             traffic.sidecar.istio.io/excludeOutboundPorts=\"25\"\n",
        ),
    },
    Case {
        name: "native-ignores-capture-options",
        args: &[
            "--mode",
            "native",
            "--include-outbound-ports",
            "443",
            "--exclude-inbound-ports",
            "15020",
        ],
        annotations: None,
    },
];
