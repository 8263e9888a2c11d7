# bash completion for vmigrate(1): commands, options and their choices,
# guest names (vmigrate list --json), job ids (vmigrate jobs --json) and
# files. What each command takes is read from its own --help, in the shape
# tools/vmigrate/help.h describes, so this file never lags the CLI:
#   usage: vmigrate CMD WORDS...    one line a form ("       vmigrate CMD"
#                                   for the next), placeholders in capitals
#   "  --option ARG  text"          an option with a value; a|b|c: choices
# Installed as share/bash-completion/completions/vmigrate.

_vmigrate_guests() {
	"$1" list --json 2>/dev/null | grep -o '"name":"[^"]*"' |
		sed 's/^"name":"//; s/"$//' | sort -u
}

_vmigrate_jobs() {
	"$1" jobs --json 2>/dev/null | grep -o '"job":"[^"]*"' |
		sed 's/^"job":"//; s/"$//' | sort -u
}

# the value an option takes, from the help in $2 ("" when it takes none)
_vmigrate_optarg() {
	[[ $1 =~ ^--[a-z0-9-]+$ ]] || return
	printf '%s\n' "$2" | sed -n "s/^  \(-h, \)\{0,1\}$1 \([^ ][^ ]*\).*/\2/p" | head -n 1
}

# candidates for a placeholder or literal WORD of a usage form
_vmigrate_words() {
	local vm=$1 word=$2 cur=$3
	case $word in
	NAME) compgen -W "$(_vmigrate_guests "$vm")" -- "$cur" ;;
	JOB) compgen -W "$(_vmigrate_jobs "$vm")" -- "$cur" ;;
	FILE | OUT | KEYFILE | PATH | *\|PATH) compopt -o filenames 2>/dev/null; compgen -f -- "$cur" ;;
	DIR) compopt -o filenames 2>/dev/null; compgen -d -- "$cur" ;;
	HOST*) compgen -A hostname -- "$cur" ;;
	*[A-Z]*) ;;		# a number, a rate: nothing to offer
	*\|*) compgen -W "${word//|/ }" -- "$cur" ;;
	*) compgen -W "$word" -- "$cur" ;;
	esac
}

_vmigrate() {
	local vm=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]} prev="" cmd help arg
	local -a typed=() forms=() cands=()
	local i w best=-1

	COMPREPLY=()
	[ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD - 1]}
	if [ "$COMP_CWORD" -le 1 ]; then
		local cmds
		cmds=$("$vm" --help 2>/dev/null |
			sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p')
		mapfile -t COMPREPLY < <(compgen -W "$cmds --help --version" -- "$cur")
		return
	fi
	cmd=${COMP_WORDS[1]}
	[[ $cmd =~ ^[a-z][a-z-]*$ ]] || return
	help=$("$vm" "$cmd" --help 2>/dev/null) || return

	arg=$(_vmigrate_optarg "$prev" "$help")
	if [ -n "$arg" ]; then
		mapfile -t COMPREPLY < <(_vmigrate_words "$vm" "$arg" "$cur")
		return
	fi
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(printf '%s\n' "$help" |
			sed -n 's/^  \(-h, \)\{0,1\}\(--[a-z0-9-]*\).*/\2/p')" -- "$cur")
		return
	fi

	# the arguments typed so far, without the options and their values
	for ((i = 2; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if [[ $w == -* ]]; then
			[ -n "$(_vmigrate_optarg "$w" "$help")" ] && i=$((i + 1))
		else
			typed+=("$w")
		fi
	done
	# each usage form, as its arguments alone
	mapfile -t forms < <(printf '%s\n' "$help" |
		sed -n "s/^\(usage:\|      \) vmigrate $cmd\( \|$\)//p")
	for w in "${forms[@]}"; do
		local -a p=() toks=()
		local t skip=0 score=0 ok=1
		read -ra toks <<<"$w"	# no globbing: [--json] is a word here
		for t in "${toks[@]}"; do
			if [ "$skip" = 1 ]; then skip=0; continue; fi
			case $t in
			\[*) ;;
			--*) skip=1 ;;
			*) p+=("$t") ;;
			esac
		done
		[ "${#p[@]}" -gt "${#typed[@]}" ] || continue
		for ((i = 0; i < ${#typed[@]}; i++)); do
			if [[ ${p[i]} == *[A-Z]* ]]; then
				:
			elif [ "${p[i]}" = "${typed[i]}" ]; then
				score=$((score + 1))
			else
				ok=0
			fi
		done
		[ "$ok" = 1 ] || continue
		# the forms whose literals the typed words match best
		if [ "$score" -gt "$best" ]; then
			best=$score
			cands=()
		fi
		[ "$score" = "$best" ] && cands+=("${p[${#typed[@]}]}")
	done
	mapfile -t cands < <(printf '%s\n' "${cands[@]}" | sort -u)
	for w in "${cands[@]}"; do
		[ -n "$w" ] || continue
		mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(_vmigrate_words "$vm" "$w" "$cur")
	done
}

complete -F _vmigrate vmigrate
