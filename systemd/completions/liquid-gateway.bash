_liquid_gateway_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _LIQUID_GATEWAY_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _liquid_gateway_completion liquid-gateway
