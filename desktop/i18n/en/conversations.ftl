# The conversation list.

conversations-title = Conversations
conversations-empty = No conversations yet.
conversations-new-label = New conversation
conversations-new-hint = the person's name
conversations-new-open = Open
conversations-unread = { $count ->
    [one] 1 unread
   *[other] { $count } unread
}
conversations-joining = Group on its way…
conversations-left = { $name } (left)
conversations-no-message = No messages
conversations-preview-own = You: { $text }
