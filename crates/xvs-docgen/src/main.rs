//! `xvs-docgen`: what the package build needs that no installed binary prints:
//! `xvs-docgen xvsadm-completion bash|zsh`. Not installed.

#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["xvsadm-completion", shell] => xvs_docgen::xvsadm_completion(shell),
        _ => Err("usage: xvs-docgen xvsadm-completion bash|zsh".to_string()),
    };
    match out {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("xvs-docgen: {e}");
            std::process::exit(2);
        }
    }
}
