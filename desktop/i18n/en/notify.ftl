# Desktop notifications: never a message's text unless the user allowed it.

notify-new-messages = { $count ->
    [one] New message
   *[other] { $count } new messages
}
notify-text-in-group = { $sender }: { $text }
