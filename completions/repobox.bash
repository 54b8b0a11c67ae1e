# bash completion for repobox.
# Generated from the Typer app by `python -m repobox_cli.completions --write completions/`: do not edit by hand.
# Install: source this file, or copy it to ~/.local/share/bash-completion/completions/repobox

_repobox() {
    local cur prev cmd word i sub j
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev=""
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    # --option=value: bash splits the word at '=' (COMP_WORDBREAKS)
    if [[ "$cur" == "=" ]]; then
        cur=""
    elif [[ "$prev" == "=" ]] && (( COMP_CWORD > 1 )); then
        prev="${COMP_WORDS[COMP_CWORD-2]}"
    fi
    cmd=""
    for (( i = 1; i < COMP_CWORD; i++ )); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            -*) ;;
            *) cmd="$word"; break ;;
        esac
    done
    case "$cmd" in
        "")
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--version --help" -- "$cur")
            else
                mapfile -t COMPREPLY < <(compgen -W "run exec decrypt pending status config completion enqueue logs cancel retry health demo token" -- "$cur")
            fi
            ;;
        run)
            case "$prev" in
                --temp-dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;
                --cache-dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;
                --agent-sandbox) mapfile -t COMPREPLY < <(compgen -W "bwrap none" -- "$cur"); return 0 ;;
                --agent-network) mapfile -t COMPREPLY < <(compgen -W "host none" -- "$cur"); return 0 ;;
                --log-format) mapfile -t COMPREPLY < <(compgen -W "pretty json" -- "$cur"); return 0 ;;
                --redis-url|--runner-id|--concurrency|--max-jobs-per-user|--job-timeout|--cache-max-bytes|--claim-min-idle|--agent-command|--agent-user|--max-deliveries|--shutdown-timeout|--allowed-git-hosts|--metrics-port|--metrics-host) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--burst --check --redis-url --runner-id --concurrency --max-jobs-per-user --job-timeout --temp-dir --cache-dir --cache-max-bytes --cleanup --no-cleanup --claim-min-idle --agent-command --agent-user --agent-sandbox --agent-network --log-format --max-deliveries --shutdown-timeout --allowed-git-hosts --allow-http --no-allow-http --metrics-port --metrics-host --help" -- "$cur")
            fi
            ;;
        exec)
            case "$prev" in
                --temp-dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;
                --cache-dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;
                --agent-sandbox) mapfile -t COMPREPLY < <(compgen -W "bwrap none" -- "$cur"); return 0 ;;
                --agent-network) mapfile -t COMPREPLY < <(compgen -W "host none" -- "$cur"); return 0 ;;
                --log-format) mapfile -t COMPREPLY < <(compgen -W "pretty json" -- "$cur"); return 0 ;;
                --redis-url|--job-timeout|--cache-max-bytes|--agent-command) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--no-push --keep-workdir --redis-url --job-timeout --temp-dir --cache-dir --cache-max-bytes --agent-command --agent-sandbox --agent-network --log-format --help" -- "$cur")
            fi
            ;;
        decrypt)
            case "$prev" in
                --user|--provider|--redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--user --provider --redis-url --help" -- "$cur")
            fi
            ;;
        pending)
            case "$prev" in
                --min-idle|--runner|--redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--claim --min-idle --runner --json --redis-url --help" -- "$cur")
            fi
            ;;
        status)
            case "$prev" in
                --redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--json --watch --redis-url --help" -- "$cur")
            fi
            ;;
        config)
            case "$prev" in
                --temp-dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;
                --cache-dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return 0 ;;
                --agent-sandbox) mapfile -t COMPREPLY < <(compgen -W "bwrap none" -- "$cur"); return 0 ;;
                --agent-network) mapfile -t COMPREPLY < <(compgen -W "host none" -- "$cur"); return 0 ;;
                --log-format) mapfile -t COMPREPLY < <(compgen -W "pretty json" -- "$cur"); return 0 ;;
                --redis-url|--runner-id|--concurrency|--max-jobs-per-user|--job-timeout|--cache-max-bytes|--claim-min-idle|--agent-command|--agent-user|--max-deliveries|--shutdown-timeout|--allowed-git-hosts|--metrics-port|--metrics-host) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--check --redis-url --runner-id --concurrency --max-jobs-per-user --job-timeout --temp-dir --cache-dir --cache-max-bytes --cleanup --no-cleanup --claim-min-idle --agent-command --agent-user --agent-sandbox --agent-network --log-format --max-deliveries --shutdown-timeout --allowed-git-hosts --allow-http --no-allow-http --metrics-port --metrics-host --help" -- "$cur")
            fi
            ;;
        completion)
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--help" -- "$cur")
            fi
            ;;
        enqueue)
            case "$prev" in
                --user|--provider|--repo|--prompt|--branch|--environment|--redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--user --provider --repo --prompt --branch --environment --redis-url --help" -- "$cur")
            fi
            ;;
        logs)
            case "$prev" in
                --redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--follow -f --redis-url --help" -- "$cur")
            fi
            ;;
        cancel)
            case "$prev" in
                --redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--redis-url --help" -- "$cur")
            fi
            ;;
        retry)
            case "$prev" in
                --redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--redis-url --help" -- "$cur")
            fi
            ;;
        health)
            case "$prev" in
                --runner-id|--redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--runner-id --redis-url --help" -- "$cur")
            fi
            ;;
        demo)
            case "$prev" in
                --redis-url) COMPREPLY=(); return 0 ;;
            esac
            if [[ "$cur" == -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "--redis-url --help" -- "$cur")
            fi
            ;;
        token)
            sub=""
            for (( j = i + 1; j < COMP_CWORD; j++ )); do
                case "${COMP_WORDS[j]}" in -*) ;; *) sub="${COMP_WORDS[j]}"; break ;; esac
            done
            case "$sub" in
                "")
                    if [[ "$cur" == -* ]]; then
                        mapfile -t COMPREPLY < <(compgen -W "--help" -- "$cur")
                    else
                        mapfile -t COMPREPLY < <(compgen -W "set check" -- "$cur")
                    fi
                    ;;
                set)
                    case "$prev" in
                        --type) mapfile -t COMPREPLY < <(compgen -W "github gitlab" -- "$cur"); return 0 ;;
                        --user|--provider|--url|--redis-url) COMPREPLY=(); return 0 ;;
                    esac
                    if [[ "$cur" == -* ]]; then
                        mapfile -t COMPREPLY < <(compgen -W "--user --provider --type --url --redis-url --help" -- "$cur")
                    fi
                    ;;
                check)
                    case "$prev" in
                        --user|--provider|--repo|--redis-url) COMPREPLY=(); return 0 ;;
                    esac
                    if [[ "$cur" == -* ]]; then
                        mapfile -t COMPREPLY < <(compgen -W "--user --provider --repo --redis-url --help" -- "$cur")
                    fi
                    ;;
            esac
            ;;
    esac
    return 0
}

complete -F _repobox repobox
