# Local search across conversations.

search-title = Search
search-field = Search the conversations
search-button = Search
search-searching = Searching…
search-hint = The search runs on this device only: the server cannot read your messages.
search-none = No message contains “{ $text }”.
search-results = { $count ->
    [one] 1 result
   *[other] { $count } results
}
search-more = Only the { $count } most recent results are shown: make your search more precise.
search-result = { $conversation } — { $sender }, { $date }
search-open = Open { $conversation } at this message
search-event-sender = Relais
